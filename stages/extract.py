"""extract@ID: find the identity's face in every sampled frame of the kept shots.

    python -m stages.extract <ID>

Reads `data/trim/<ID>/selection.parquet` (rows with `kept` true; the clip file named by its
`clip` column, in `data/trim/<ID>/clips/`) and decodes each clip
as a stream (`facedag.media.iter_frames` at `extract.fps`), detects faces in batches of
`extract.batch` (`facedag.detect.FaceDetector`), keeps the identity's face by
`extract.policy` plus IoU tracking (`facedag.detect.FaceFollower`), and writes one row per
kept face to `data/extract/<ID>/faces.parquet` (`facedag.tables.FACES_SCHEMA`), streamed
(row groups as it goes, into a temp file moved into place at the end):

    face         string   "<clip>#<frame>#<track>", unique in the table
    clip         string   the clip's file name
    frame        int32    index of the frame among those sampled from the clip (0, 1, ...)
    time         float64  seconds from the start of the clip
    frame_width  int32    frame size in px (head pose needs the camera)
    frame_height int32
    track        int32    track id (unique across the table's clips)
    score        float32  RetinaFace confidence
    bbox         fixed_size_list<float32>[4]   x0, y0, x1, y1 frame px
    landmarks    fixed_size_list<float32>[10]  x, y of the 5 points, frame px (facedag.detect order)
    crop         binary   JPEG of the loose crop (facedag.align.loose_crop)
    crop_matrix  fixed_size_list<float64>[6]   2x3 row-major, frame px -> crop px

Rejected (rejected.jsonl, item = clip name): media's codes for a clip that cannot be opened
or decoded (`not_found`, `empty_file`, `not_a_video`, `no_video_stream`, `undecodable`),
`no_face` for a clip without any face of the identity, `internal_error` for anything
unforeseen while reading a clip (the faces it gave before the error stay; the other clips go
on), and `crop_failed` (item = face) for a face whose crop cannot be cut. Frames without a
face are only counted. Fails with one line when no face was found at all.

metrics.json: frames_sampled, frames_with_face, faces, clips (clips that gave faces),
clips_rejected, tracks.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pyarrow as pa

from facedag import media
from facedag.align import loose_crop
from facedag.detect import FaceDetector, FaceFollower, follow_faces
from facedag.params import Params
from facedag.progress import progress
from facedag.records import Rejected, Rejections, StageFailed, atomic_path, write_metrics
from facedag.stagekit import fresh_dir, identity_main
from facedag.tables import FACES_SCHEMA, TableWriter, encode_image, missing_columns

STAGE = "extract"


def kept_clips(trim_dir: Path) -> list[tuple[str, Path]]:
    """(name, path) of the clips trim kept, in the table's order."""
    table_path = trim_dir / "selection.parquet"
    if not table_path.exists():
        raise StageFailed(f"{table_path} not found: run trim first")
    missing = missing_columns(table_path, pa.schema([("kept", pa.bool_()), ("clip", pa.string())]))
    if missing:
        raise StageFailed(f"{table_path} lacks column(s) {', '.join(missing)}: rerun trim")
    table = pd.read_parquet(table_path, columns=["kept", "clip"])
    kept = table[table["kept"].astype(bool) & table["clip"].notna()]
    return [(name, trim_dir / "clips" / name) for name in dict.fromkeys(kept["clip"])]


def run(params: Params, identity: str) -> None:
    ex = params.extract
    face_size = params.base.face_size
    clips = kept_clips(Path("data") / "trim" / identity)
    out = fresh_dir(Path("data") / STAGE / identity)
    rejections = Rejections(out, STAGE)
    detector = FaceDetector(
        score_threshold=ex.score_threshold, min_size=ex.min_size, max_side=ex.detect_max_side, max_batch=ex.batch
    )
    follower = FaceFollower(ex.policy, ex.iou_threshold, ex.track_max_gap)
    frames_sampled = frames_with_face = clips_ok = 0
    started = time.perf_counter()
    with atomic_path(out / "faces.parquet") as tmp:
        with TableWriter(tmp, FACES_SCHEMA) as writer:
            for name, path in clips:
                clip_faces = 0
                try:
                    frames = media.iter_frames(path, fps=ex.fps)
                    found = follow_faces(frames, detector, follower, ex.batch)
                    for frame, chosen in progress(found, desc=f"extract {name}", unit="frame"):
                        frames_sampled += 1
                        frames_with_face += bool(chosen)
                        h, w = frame.image.shape[:2]
                        for det, track in chosen:
                            face_id = f"{name}#{frame.index}#{track}"
                            try:
                                crop, cm = loose_crop(frame.image, det.landmarks, face_size)
                                data = encode_image(crop, "jpg", 95)
                            except ValueError as exc:
                                rejections.add(face_id, "crop_failed", str(exc))
                                continue
                            writer.add(
                                face=face_id, clip=name, frame=frame.index, time=frame.time,
                                frame_width=w, frame_height=h, track=track, score=det.score,
                                bbox=list(det.bbox), landmarks=det.landmarks.reshape(-1).tolist(),
                                crop=data, crop_matrix=cm.reshape(-1).tolist(),
                            )  # fmt: skip
                            clip_faces += 1
                except Rejected as exc:
                    rejections.add_error(name, exc)
                    continue
                except Exception as exc:  # a bad clip must not stop the batch
                    rejections.add(name, "internal_error", f"{type(exc).__name__}: {exc}"[:300])
                    continue
                if clip_faces == 0:
                    rejections.add(name, "no_face", "no face of the identity in any sampled frame")
                else:
                    clips_ok += 1
        if writer.count == 0:
            rejections.close()
            raise StageFailed(f"no face found in {len(clips)} clip(s) ({frames_sampled} frames sampled)")
    rejections.close()
    seconds = time.perf_counter() - started
    write_metrics(
        out,
        {
            "frames_sampled": frames_sampled,
            "frames_with_face": frames_with_face,
            "faces": writer.count,
            "clips": clips_ok,
            "clips_rejected": len(clips) - clips_ok,
            "tracks": len(follower.kept_tracks),
        },
    )
    print(
        f"[{STAGE}] {identity}: {writer.count} faces from {frames_with_face}/{frames_sampled} frames "
        f"of {clips_ok}/{len(clips)} clips, {len(follower.kept_tracks)} tracks, {seconds:.1f} s",
        flush=True,
    )


if __name__ == "__main__":
    identity_main(STAGE, run)
