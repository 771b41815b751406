"""A person's reference embeddings from params (`identities.<ID>.reference`, `target.reference`).

The forms (facedag.params.Reference): an image path, a clip frame `{uri, time}`, a list of
either, or `group:N` (a group of the footage's own identity grouping, facedag.faces.
identity_groups, read from identity.json after a first run). In each image or frame the
largest face is the person: a reference is a photo or a crop of them, and where a crowd is in
the shot the person meant is usually the one in front. Detection on a reference takes faces
down to 8 px (a crop of a small face in a wide shot is small) at any size (a close crop of
a face must not be downscaled away).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facedag.faces.identity import Embedder
from facedag.faces.identity_groups import IdentityChoice, choose_tracks


class ReferenceError(ValueError):
    """A reference that cannot be used: missing, unreadable, or without a face."""


def parse_group(spec: Any) -> int | None:
    """N of a `group:N` reference, else None."""
    if isinstance(spec, str) and spec.startswith("group:"):
        return int(spec[len("group:"):])
    return None


def describe(spec: Any) -> str | None:
    """A short label of a reference for logs and identity.json."""
    if spec is None:
        return None
    items = spec if isinstance(spec, list) else [spec]
    return ", ".join(v if isinstance(v, str) else f"{v.uri}@{v.time:g}s" for v in items)


def _read_image(path: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise ReferenceError(f"reference image {path} not found")
    data = np.fromfile(p, np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise ReferenceError(f"reference image {path} does not decode as an image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _read_frame(uri: str, time: float) -> np.ndarray:
    from facedag.records import Rejected
    from facedag.sources.media import iter_frames

    try:
        frames = iter_frames(uri, start=time)
        frame = next(frames, None)
        frames.close()
    except Rejected as exc:
        raise ReferenceError(f"reference clip {uri}: {exc.reason}: {exc.message}") from None
    if frame is None:
        raise ReferenceError(f"reference clip {uri} has no frame at {time:g} s")
    return frame.image


def reference_embeddings(spec: Any, embedder: Embedder) -> np.ndarray:
    """(N, 128) embeddings of the person in each image / clip frame of `spec` (not `group:N`).

    Raises ReferenceError naming the first item that is missing or shows no face.
    """
    from facedag.faces.detect import FaceDetector

    items = spec if isinstance(spec, list) else [spec]
    detector = FaceDetector(score_threshold=0.6, min_size=8, max_side=4096, max_batch=1)
    out = []
    for item in items:
        if isinstance(item, str):
            image, what = _read_image(item), item
        else:
            image, what = _read_frame(item.uri, item.time), f"{item.uri} at {item.time:g} s"
        # a tight crop leaves RetinaFace no context: pad it with the edge colours
        pad = max(image.shape[:2]) // 2
        padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        dets = detector.detect(padded)
        if not dets:
            raise ReferenceError(f"no face found in the reference {what}")
        best = max(dets, key=lambda d: d.area)
        out.append(embedder.embed_at(padded, [best.landmarks])[0])
    return np.stack(out)


def pick_person(tracks: dict[int, dict[str, Any]], threshold: float, spec: Any,
                embedder: Embedder) -> IdentityChoice:  # fmt: skip
    """The tracks of the person `spec` names (None: the largest identity group); see
    facedag.faces.identity_groups.choose_tracks. Raises ReferenceError for an unusable reference."""
    group = parse_group(spec)
    ref = reference_embeddings(spec, embedder) if spec is not None and group is None else None
    try:
        return choose_tracks(tracks, threshold, reference=ref, group=group, reference_label=describe(spec))
    except ValueError as exc:
        raise ReferenceError(str(exc)) from None
