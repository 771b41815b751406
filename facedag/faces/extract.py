"""One clip's faces, streamed: what extract@ID does per clip.

The clip is decoded as a stream (facedag.sources.media.iter_frames at `extract.fps`), faces are
detected in batches (facedag.faces.detect.FaceDetector), the identity's face is kept by
`extract.policy` plus IoU tracking (FaceFollower; with `identity`, every face is tracked and a
few faces per track are embedded by facedag.faces.identity_groups.TrackSampler, for the stage
to choose the person's tracks once all clips are done), and each kept face is written as one row of
facedag.tables.FACES_SCHEMA with a loose JPEG crop around it (facedag.faces.align.loose_crop).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from facedag.faces.align import loose_crop
from facedag.faces.detect import FaceDetector, FaceFollower, follow_faces
from facedag.faces.identity import Embedder
from facedag.faces.identity_groups import TrackSampler
from facedag.params import Extract
from facedag.progress import progress
from facedag.records import Rejected
from facedag.resume import no_space_left
from facedag.sources.media import iter_frames, probe, work_timeout
from facedag.tables import FACES_SCHEMA, TableWriter, encode_image


def extract_clip(name: str, path: Path, dst: Path, detector: FaceDetector, ex: Extract, face_size: int,
                 first_track: int, embedder: Embedder | None = None) -> dict[str, Any]:  # fmt: skip
    """Stream one clip's faces into the parquet `dst` (FACES_SCHEMA); return the clip's record.

    Track ids start at `first_track`. The record holds the counts, whether the clip counts as
    used (`ok`), its rejections ({item, reason, message}: media's codes, `no_face`,
    `internal_error` for the clip, `crop_failed` for a face), the tracks it started and kept:
    what a resumed run needs to go on as if it had processed the clip itself. A full disk is
    raised, not recorded: the stage stops on it. With an `embedder` (policy `identity`), every
    face is kept and the record's `identity` holds each track's embeddings (TrackSampler.finish).
    """
    sampler = TrackSampler(ex.identity_interval, ex.identity_per_track) if embedder is not None else None
    follower = FaceFollower("all" if sampler is not None else ex.policy, ex.iou_threshold, ex.track_max_gap)
    rejected: list[dict[str, str]] = []

    def reject(item: str, reason: str, message: str) -> None:
        rejected.append({"item": item, "reason": reason, "message": message})

    frames_sampled = frames_with_face = 0
    ok = True
    with TableWriter(dst, FACES_SCHEMA) as writer:
        try:
            frames = iter_frames(path, fps=ex.fps, timeout=work_timeout(probe(path).duration))
            found = follow_faces(frames, detector, follower, ex.batch)
            for frame, chosen in progress(found, desc=f"extract {name}", unit="frame"):
                frames_sampled += 1
                frames_with_face += bool(chosen)
                h, w = frame.image.shape[:2]
                for det, local_track in chosen:
                    track = first_track + local_track
                    if sampler is not None:
                        sampler.add(track, frame.time, frame.image, det.landmarks, det.size)
                    face_id = f"{name}#{frame.index}#{track}"
                    try:
                        crop, cm = loose_crop(frame.image, det.landmarks, face_size)
                        data = encode_image(crop, "jpg", 95)
                    except ValueError as exc:
                        reject(face_id, "crop_failed", str(exc))
                        continue
                    writer.add(
                        face=face_id, clip=name, frame=frame.index, time=frame.time,
                        frame_width=w, frame_height=h, track=track, score=det.score,
                        bbox=list(det.bbox), landmarks=det.landmarks.reshape(-1).tolist(),
                        crop=data, crop_matrix=cm.reshape(-1).tolist(),
                    )  # fmt: skip
        except Rejected as exc:
            reject(name, exc.reason, exc.message)
            ok = False
        except Exception as exc:  # a bad clip must not stop the batch; a full disk must
            if no_space_left(exc):
                raise
            reject(name, "internal_error", f"{type(exc).__name__}: {exc}"[:300])
            ok = False
    if ok and writer.count == 0:
        reject(name, "no_face", "no face of the identity in any sampled frame")
        ok = False
    return {
        "clip": name,
        "ok": ok,
        "frames_sampled": frames_sampled,
        "frames_with_face": frames_with_face,
        "faces": writer.count,
        "tracks_started": follower.tracker.tracks_started,
        "kept_tracks": sorted(first_track + t for t in follower.kept_tracks),
        "rejected": rejected,
        "identity": sampler.finish(embedder) if sampler is not None and embedder is not None else None,
    }
