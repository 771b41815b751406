"""extract@ID: find the identity's face in every sampled frame of the kept shots.

    python -m stages.extract <ID>

Reads `data/trim/<ID>/selection.parquet` (rows with `kept` true; the clip file named by its
`clip` column, relative to `data/trim/<ID>/clips/` or the project root) and decodes each clip
as a stream (`facedag.media.iter_frames` at `extract.fps`), detects faces in batches of
`extract.batch` (`facedag.detect.FaceDetector`), keeps the identity's face by
`extract.policy` plus IoU tracking (`facedag.detect.FaceFollower`), and writes one row per
kept face to `data/extract/<ID>/faces.parquet`, streamed (row groups as it goes, into a temp
file moved into place at the end):

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
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from facedag import media
from facedag.align import loose_crop
from facedag.detect import FaceDetector, FaceFollower, batched, prefetch
from facedag.params import Extract, Params
from facedag.records import Rejected, Rejections, StageFailed, atomic_path, write_metrics
from facedag.stagekit import fresh_dir, identity_main

STAGE = "extract"
CROP_JPEG_QUALITY = 95

SCHEMA = pa.schema(
    [
        ("face", pa.string()),
        ("clip", pa.string()),
        ("frame", pa.int32()),
        ("time", pa.float64()),
        ("frame_width", pa.int32()),
        ("frame_height", pa.int32()),
        ("track", pa.int32()),
        ("score", pa.float32()),
        ("bbox", pa.list_(pa.float32(), 4)),
        ("landmarks", pa.list_(pa.float32(), 10)),
        ("crop", pa.binary()),
        ("crop_matrix", pa.list_(pa.float64(), 6)),
    ]
)
ROW_GROUP = 64  # rows buffered before a row group is written: bounds memory (about 1-2 MB of crops)


def kept_clips(trim_dir: Path) -> list[tuple[str, Path]]:
    """(name, path) of the clips trim kept, in selection order; all clips when there is no table."""
    clips_dir = trim_dir / "clips"
    table_path = trim_dir / "selection.parquet"
    if not table_path.exists():
        if not clips_dir.is_dir():
            raise StageFailed(f"no {table_path} and no {clips_dir}: run trim first")
        return [(p.name, p) for p in sorted(clips_dir.iterdir()) if p.is_file() and not p.name.startswith(".")]
    table = pq.read_table(table_path).to_pandas()
    if "kept" in table:
        table = table[table["kept"].astype(bool)]
    column = next((c for c in ("clip", "path", "file") if c in table), None)
    if column is None:
        raise StageFailed(f"{table_path} has no `clip` column")
    out: list[tuple[str, Path]] = []
    seen: set[str] = set()
    for value in table[column]:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            continue
        value = str(value)
        if value in seen:
            continue
        seen.add(value)
        candidates = [clips_dir / value, Path(value), clips_dir / Path(value).name]
        path = next((c for c in candidates if c.exists()), candidates[0])
        out.append((Path(value).name, path))
    return out


def encode_jpeg(rgb: np.ndarray, quality: int = CROP_JPEG_QUALITY) -> bytes:
    """JPEG bytes of an RGB image."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


class _Writer:
    """Streamed parquet rows: buffer up to ROW_GROUP rows, then write a row group."""

    def __init__(self, path: Path) -> None:
        self._writer = pq.ParquetWriter(path, SCHEMA, compression="zstd")
        self._rows: dict[str, list] = {name: [] for name in SCHEMA.names}
        self.count = 0

    def add(self, **row: object) -> None:
        for name in SCHEMA.names:
            self._rows[name].append(row[name])
        self.count += 1
        if len(self._rows["face"]) >= ROW_GROUP:
            self.flush()

    def flush(self) -> None:
        if self._rows["face"]:
            self._writer.write_table(pa.table(self._rows, schema=SCHEMA))
            self._rows = {name: [] for name in SCHEMA.names}

    def close(self) -> None:
        self.flush()
        self._writer.close()


def iter_clip_faces(
    path: Path, ex: Extract, detector: FaceDetector, follower: FaceFollower
) -> Iterator[tuple[media.Frame, list]]:
    """(frame, [(Detection, track)]) for every sampled frame of one clip, detected in batches.

    Frames are decoded on a background thread (`prefetch`), overlapping with detection.
    """
    follower.reset()
    frames = prefetch(media.iter_frames(path, fps=ex.fps), depth=2 * ex.batch)
    for batch in batched(frames, ex.batch):
        dets = detector.detect_batch([f.image for f in batch])
        for frame, found in zip(batch, dets, strict=True):
            yield frame, follower.update(found, frame.image.shape, frame.time)


def run(params: Params, identity: str) -> None:
    ex = params.extract
    face_size = params.base.face_size
    out = fresh_dir(Path("data") / STAGE / identity)
    rejections = Rejections(out, STAGE)
    clips = kept_clips(Path("data") / "trim" / identity)
    detector = FaceDetector(
        score_threshold=ex.score_threshold, min_size=ex.min_size, max_side=ex.detect_max_side, max_batch=ex.batch
    )
    follower = FaceFollower(ex.policy, ex.iou_threshold, ex.track_max_gap)
    frames_sampled = frames_with_face = clips_ok = 0
    started = time.perf_counter()
    with atomic_path(out / "faces.parquet") as tmp:
        writer = _Writer(tmp)
        try:
            for name, path in clips:
                clip_faces = 0
                try:
                    for frame, chosen in iter_clip_faces(path, ex, detector, follower):
                        frames_sampled += 1
                        if chosen:
                            frames_with_face += 1
                        h, w = frame.image.shape[:2]
                        for det, track in chosen:
                            face_id = f"{name}#{frame.index}#{track}"
                            try:
                                crop, cm = loose_crop(frame.image, det.landmarks, face_size)
                                data = encode_jpeg(crop)
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
        finally:
            writer.close()
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


def main() -> None:
    identity_main(STAGE, run)


if __name__ == "__main__":
    main()
