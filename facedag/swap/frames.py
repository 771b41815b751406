"""The converted frames table (data/convert/frames.parquet): what convert did to each frame.

One row per target frame (CONVERT_SCHEMA): frame, time, swapped, faces, score, mask_area
(frame px with a non-zero mask), bbox and track (of the best-scored swapped face; null when
none), and the blend mask itself (the union of the pasted masks, as an 8-bit PNG of its
bounding box `mask_box`), so that evaluate_video measures seams, flicker and colour where the
blend actually happened; and per pasted face its track and aligned->frame matrix (the export
stage's compositing transforms; tables written before these two columns are refused by export
when it writes patches, by name). Its own module, apart from convert, so that the stages reading it do
not depend on convert's code.
"""

from __future__ import annotations

import cv2
import numpy as np
import pyarrow as pa

CONVERT_SCHEMA = pa.schema([
    ("frame", pa.int32()),
    ("time", pa.float64()),
    ("swapped", pa.bool_()),
    ("faces", pa.int32()),  # faces pasted into this frame
    ("score", pa.float32()),  # detector confidence of the best swapped face (null: none)
    ("mask_area", pa.int64()),  # frame px under a non-zero mask (summed over faces)
    ("bbox", pa.list_(pa.float32(), 4)),  # x0, y0, x1, y1 of the best swapped face (null: none)
    ("track", pa.int32()),
    ("mask_box", pa.list_(pa.int32(), 4)),  # x0, y0, x1, y1 (px, exclusive ends) of `mask` (null: none)
    ("mask", pa.binary()),  # the blend mask there, 8-bit grey PNG (0 = target untouched): evaluate_video's
    ("face_tracks", pa.list_(pa.int32())),  # per pasted face, in paste order: its track ([]: none)
    ("face_matrices", pa.list_(pa.list_(pa.float64(), 6))),  # and its aligned px -> frame px 2x3 matrix, row-major
])  # fmt: skip

# the columns the export stage's compositing patches need: tables written before them are refused
# by name (facedag.tables.missing_columns), never misread
PLACEMENT_COLUMNS = ("face_tracks", "face_matrices")


def encode_mask(alpha: np.ndarray) -> bytes:
    """A blend mask (float [0, 1]) as an 8-bit grey PNG."""
    ok, buf = cv2.imencode(".png", np.clip(alpha * 255.0 + 0.5, 0, 255).astype(np.uint8),
                           [cv2.IMWRITE_PNG_COMPRESSION, 3])  # fmt: skip
    if not ok:  # pragma: no cover - cv2 encodes any 2-D uint8 array
        raise ValueError("cannot encode the mask")
    return buf.tobytes()


def decode_mask(box: list[int] | None, data: bytes | None, height: int, width: int) -> np.ndarray | None:
    """The frame-sized uint8 mask of one frame from its `mask_box` and `mask` columns (None: no swap)."""
    if box is None or not data:
        return None
    crop = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    x0, y0, x1, y1 = (int(v) for v in box)
    if crop is None or crop.shape != (y1 - y0, x1 - x0):
        raise ValueError(f"a mask of {None if crop is None else crop.shape} does not fit its box {box}")
    full = np.zeros((height, width), np.uint8)
    full[y0:y1, x0:x1] = crop
    return full
