"""The typed tables between stages: their arrow schemas, a streaming writer, and image bytes.

One place defines what extract writes and align reads (and what align writes and dedupe,
train and convert read), so a column is never spelled two ways. Tables are written in row
groups as rows come, so memory stays flat however long the footage is.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# One detected face, as extract finds it (frame px); carried on by align and dedupe.
FACE_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("face", pa.string()),  # "<clip>#<frame>#<track>", unique in the table
    ("clip", pa.string()),
    ("frame", pa.int32()),
    ("time", pa.float64()),
    ("frame_width", pa.int32()),
    ("frame_height", pa.int32()),
    ("track", pa.int32()),
    ("score", pa.float32()),
    ("bbox", pa.list_(pa.float32(), 4)),  # x0, y0, x1, y1
    ("landmarks", pa.list_(pa.float32(), 10)),  # 5 (x, y) points, facedag.faces.detect order
]

# extract's faces.parquet: plus the loose crop align warps from, and where it came from.
FACES_SCHEMA = pa.schema([
    *FACE_COLUMNS,
    ("crop", pa.binary()),  # JPEG
    ("crop_matrix", pa.list_(pa.float64(), 6)),  # 2x3 row-major, frame px -> crop px
])  # fmt: skip

# What align measures per face (facedag.faces.features).
FEATURES = ["yaw", "pitch", "roll", "luminance", "asymmetry", "contrast", "warmth", "cct",
            "sharpness", "mouth_open", "eyes_open"]  # fmt: skip

# align's aligned.parquet (and, with dedupe's columns added, dataset.parquet).
ALIGNED_SCHEMA = pa.schema([
    *FACE_COLUMNS,
    ("face_size", pa.int32()),
    ("matrix", pa.list_(pa.float64(), 6)),  # 2x3 row-major, frame px -> aligned px (convert inverts it)
    *[(name, pa.float32()) for name in FEATURES],
    ("image", pa.binary()),
    ("image_format", pa.string()),  # "jpg" or "png"
    # the dense landmarker's (facedag.faces.landmarkers): null where it fell back to five points
    ("landmarks_from", pa.string()),  # "mesh" or "five_points"
    ("mesh", pa.list_(pa.float32(), 956)),  # 478 (x, y) points in ALIGNED px
    ("blendshapes", pa.list_(pa.float32(), 52)),  # facedag.faces.mesh.BLENDSHAPES order
    ("smile", pa.float32()),  # mean of mouthSmileLeft/Right
])  # fmt: skip


class TableWriter:
    """Append rows to a parquet file, one row group every `row_group` rows.

    Row groups of 64 keep the 1x and 3x clip memory peaks equal (measured in
    benchmarks/bench_extract.py), while staying large enough for zstd to compress well.
    """

    def __init__(self, path: str | os.PathLike[str], schema: pa.Schema, row_group: int = 64) -> None:
        self.schema = schema
        self.row_group = row_group
        self.count = 0
        self._writer = pq.ParquetWriter(path, schema, compression="zstd")
        self._rows: dict[str, list[Any]] = {name: [] for name in schema.names}

    def add(self, **row: Any) -> None:
        """Add one row; every column of the schema must be given."""
        for name in self.schema.names:
            self._rows[name].append(row[name])
        self.count += 1
        if len(self._rows[self.schema.names[0]]) >= self.row_group:
            self.flush()

    def flush(self) -> None:
        if self._rows[self.schema.names[0]]:
            self._writer.write_table(pa.table(self._rows, schema=self.schema))
            self._rows = {name: [] for name in self.schema.names}

    def close(self) -> None:
        self.flush()
        self._writer.close()

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def missing_columns(path: str | os.PathLike[str], schema: pa.Schema) -> list[str]:
    """Columns of `schema` that the parquet file at `path` lacks (a table from an older version)."""
    return sorted(set(schema.names) - set(pq.ParquetFile(path).schema_arrow.names))


def encode_image(rgb: np.ndarray, fmt: str = "jpg", jpeg_quality: int = 95) -> bytes:
    """Encode an RGB uint8 image as jpg (at `jpeg_quality`) or png."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if fmt == "png":
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    else:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    if not ok:
        raise ValueError(f"{fmt} encoding failed")
    return buf.tobytes()


def decode_image(data: bytes | None) -> np.ndarray | None:
    """RGB uint8 from encoded (jpg/png) bytes; None when they do not decode to a usable image."""
    if not data:
        return None
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.ndim != 3 or img.shape[0] < 2 or img.shape[1] < 2:
        return None
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
