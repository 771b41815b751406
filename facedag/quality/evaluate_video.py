"""evaluate_video: the converted video against the untouched target, frame by frame, with the
blend masks convert used (data/convert/frames.parquet): flicker ratio, seam, LAB colour gap,
landmark error and detect rate (facedag.quality.metrics.VideoQuality), and pose and expression
error (facedag.quality.fidelity). RetinaFace runs on the target and on the output: the
target's face is the reference for pose and expression, and a swapped frame where RetinaFace
no longer finds a face is a broken swap. Streamed: frames one at a time, detection in batches.
With an identity scorer (facedag.quality.identity.IdentityScorer), each swapped frame's output
face is also embedded (SFace, a batch per chunk) and scored against src's and the other
identities' mean faces: id_retrieval and id_margin in the summary, id_src / id_dst /
id_retrieved per frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from facedag.faces.landmarkers import Landmarker
from facedag.quality.fidelity import Fidelity
from facedag.quality.identity import IdentityScorer
from facedag.quality.metrics import VideoQuality

# what a video metric must reach (issue 7's goals; README "Quality you can measure")
GOALS = {"flicker": 1.1, "seam": 0.10, "colour_gap": 2.3}



def _nearest(dets: list, center: tuple[float, float] | None) -> Any:
    """The detection nearest `center` (the mask's centre), or None."""
    if not dets or center is None:
        return None
    cx, cy = center
    return min(dets, key=lambda d: (d.center[0] - cx) ** 2 + (d.center[1] - cy) ** 2)


def _center(mask: np.ndarray | None) -> tuple[float, float] | None:
    if mask is None:
        return None
    ys, xs = np.nonzero(mask > 127 if mask.dtype == np.uint8 else mask > 0.5)
    return (float(xs.mean()), float(ys.mean())) if len(xs) else None


def evaluate_video(
    target_frames: Iterator[np.ndarray],
    output_frames: Iterator[np.ndarray],
    masks: Iterator[np.ndarray | None],
    detector: Any,
    batch: int = 8,
    landmarker: Landmarker | None = None,
    identity: IdentityScorer | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(summary, one row per frame) of the converted video against its target.

    The three iterators run in lockstep (same frame count); a mask is uint8 (H, W) with 0 where
    the target is untouched, or None for a frame with no swap. `detector` is a
    facedag.faces.detect.FaceDetector (batched over `batch` frames of each video). With a mesh
    `landmarker` (facedag.faces.landmarkers.mediapipe), pose and expression error too.
    """
    quality = VideoQuality()
    fidelity = Fidelity(landmarker) if landmarker is not None else None
    rows: list[dict[str, Any]] = []
    triples = zip(target_frames, output_frames, masks, strict=True)
    while chunk := [t for _, t in zip(range(batch), triples, strict=False)]:
        swapped = [i for i, (_, _, m) in enumerate(chunk) if m is not None and m.any()]
        found_t = detector.detect_batch([chunk[i][0] for i in swapped]) if swapped else []
        found_o = detector.detect_batch([chunk[i][1] for i in swapped]) if swapped else []
        dets = {i: (t, o) for i, t, o in zip(swapped, found_t, found_o, strict=True)}
        to_score: list[tuple[int, np.ndarray, np.ndarray]] = []  # (row, output frame, output landmarks)
        for i, (target, output, mask) in enumerate(chunk):
            if i not in dets:
                rows.append({"frame": len(rows), "swapped": 0, **quality.add(target, output, None)})
                continue
            center = _center(mask)
            ref, got = _nearest(dets[i][0], center), _nearest(dets[i][1], center)
            row = quality.add(target, output, mask,
                              target_landmarks=ref.landmarks if ref is not None else None,
                              output_landmarks=got.landmarks if got is not None else None,
                              output_face_found=got is not None)  # fmt: skip
            if fidelity is not None and ref is not None and got is not None:
                row.update(fidelity.add(target, ref.landmarks, output, got.landmarks))
            rows.append({"frame": len(rows), "swapped": 1, **row})
            if identity is not None and got is not None:
                to_score.append((len(rows) - 1, output, got.landmarks))
        if to_score and identity is not None:
            scores = identity.score([o for _, o, _ in to_score], [lm for _, _, lm in to_score])
            for (r, _, _), score in zip(to_score, scores, strict=True):
                rows[r].update(score)
    summary = quality.result()
    if fidelity is not None:
        summary.update(fidelity.result())
    if identity is not None:
        summary.update(identity.result())
    summary["goals"] = {k: {"goal": f"<= {v}", "met": summary.get(k) is not None and summary[k] <= v}
                        for k, v in GOALS.items()}  # fmt: skip
    return summary, rows
