"""align@ID: warp every extracted face to the canonical template and measure it.

    python -m stages.align <ID>

Reads `data/extract/<ID>/faces.parquet` in record batches (never whole in memory), warps
each loose crop to `base.face_size` with the similarity from its 5 landmarks to the template
(`facedag.align`), measures pose, lighting, sharpness and expression (`facedag.features`), and
streams `data/align/<ID>/aligned.parquet` (temp file, moved into place at the end):

    face, clip, frame, time, frame_width, frame_height, track, score, bbox, landmarks
                 as in faces.parquet (landmarks in FRAME px)
    face_size    int32    side of the aligned image
    matrix       fixed_size_list<float64>[6]  2x3 row-major, FRAME px -> ALIGNED px
                 (convert pastes back with its inverse, facedag.align.invert_affine)
    yaw, pitch, roll                      float32 degrees (facedag.features.head_pose signs)
    luminance, asymmetry, contrast, warmth, cct   float32 (facedag.features.lighting)
    sharpness    float32  variance of the Laplacian of the aligned luma over the face mask
    mouth_open, eyes_open                 float32 proxies (facedag.features.expression)
    image        binary   the aligned RGB face, encoded as `align.image_format`
    image_format string   "jpg" or "png"

Rejected (item = face): `undecodable_crop` (the crop bytes do not decode),
`degenerate_landmarks` (non-finite, collapsed or mirrored points; a matrix that is not a
similarity), `pose_failed` (PnP found no pose), `internal_error` (anything unforeseen with
one face; the others go on). Fails with one line when no face is left.

metrics.json: faces_in, faces, rejected, and the medians of yaw, pitch, sharpness, luminance.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from facedag.align import as_matrix, check_landmarks, face_from_crop
from facedag.features import face_features, head_pose
from facedag.params import Params
from facedag.records import Rejections, StageFailed, atomic_path, write_metrics
from facedag.stagekit import fresh_dir, identity_main

STAGE = "align"
READ_BATCH = 64  # faces read, aligned and written per step: bounds memory

CARRIED = [
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
]
FEATURES = ["yaw", "pitch", "roll", "luminance", "asymmetry", "contrast", "warmth", "cct",
            "sharpness", "mouth_open", "eyes_open"]  # fmt: skip
SCHEMA = pa.schema(
    [
        *CARRIED,
        ("face_size", pa.int32()),
        ("matrix", pa.list_(pa.float64(), 6)),
        *[(name, pa.float32()) for name in FEATURES],
        ("image", pa.binary()),
        ("image_format", pa.string()),
    ]
)


def decode_rgb(data: bytes | None) -> np.ndarray | None:
    """RGB uint8 from encoded bytes, None when they do not decode."""
    if not data:
        return None
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.ndim != 3 or img.shape[0] < 2 or img.shape[1] < 2:
        return None
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def encode_image(rgb: np.ndarray, fmt: str, jpeg_quality: int) -> bytes:
    """Encode an RGB image as jpg (at `jpeg_quality`) or png."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if fmt == "png":
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    else:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    if not ok:
        raise ValueError(f"{fmt} encoding failed")
    return buf.tobytes()


class AlignError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def align_row(
    crop_bytes: bytes, crop_matrix: object, landmarks: object, frame_shape: tuple[int, int], face_size: int
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """One face: (aligned RGB, matrix frame px -> aligned px, features) or AlignError."""
    crop = decode_rgb(crop_bytes)
    if crop is None:
        raise AlignError("undecodable_crop", "the crop image does not decode")
    try:
        lm = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
        check_landmarks(lm)
        cm = as_matrix(crop_matrix)
        aligned, m = face_from_crop(crop, cm, lm, face_size)
    except (ValueError, TypeError, cv2.error, np.linalg.LinAlgError) as exc:
        raise AlignError("degenerate_landmarks", str(exc)) from None
    try:
        yaw, pitch, roll = head_pose(lm, frame_shape)
    except (ValueError, cv2.error) as exc:
        raise AlignError("pose_failed", str(exc)) from None
    feats = {"yaw": yaw, "pitch": pitch, "roll": roll, **face_features(aligned)}
    return aligned, m, feats


def run(params: Params, identity: str) -> None:
    face_size = params.base.face_size
    fmt = params.align.image_format
    src = Path("data") / "extract" / identity / "faces.parquet"
    if not src.exists():
        raise StageFailed(f"{src} not found: run extract first")
    out = fresh_dir(Path("data") / STAGE / identity)
    rejections = Rejections(out, STAGE)
    started = time.perf_counter()
    faces_in = written = 0
    stats: dict[str, list[float]] = {k: [] for k in ("yaw", "pitch", "sharpness", "luminance")}
    source = pq.ParquetFile(src)
    missing = {name for name, _ in CARRIED} | {"crop", "crop_matrix"}
    missing -= set(source.schema_arrow.names)
    if missing:
        raise StageFailed(f"{src} lacks column(s) {', '.join(sorted(missing))}")
    with atomic_path(out / "aligned.parquet") as tmp:
        writer = pq.ParquetWriter(tmp, SCHEMA, compression="zstd")
        try:
            for batch in source.iter_batches(batch_size=READ_BATCH):
                rows = batch.to_pydict()
                n = batch.num_rows
                faces_in += n
                cols: dict[str, list] = {name: [] for name in SCHEMA.names}
                for i in range(n):
                    face_id = str(rows["face"][i])
                    w, h = int(rows["frame_width"][i] or 0), int(rows["frame_height"][i] or 0)
                    try:
                        aligned, m, feats = align_row(
                            rows["crop"][i], rows["crop_matrix"][i], rows["landmarks"][i], (h, w), face_size
                        )
                        data = encode_image(aligned, fmt, params.align.jpeg_quality)
                    except AlignError as exc:
                        rejections.add(face_id, exc.reason, exc.message)
                        continue
                    except Exception as exc:  # one bad face must not stop the batch
                        rejections.add(face_id, "internal_error", f"{type(exc).__name__}: {exc}"[:300])
                        continue
                    for name, _ in CARRIED:
                        cols[name].append(rows[name][i] if name in rows else None)
                    cols["face_size"].append(face_size)
                    cols["matrix"].append(m.reshape(-1).tolist())
                    for name in FEATURES:
                        cols[name].append(float(feats[name]))
                    cols["image"].append(data)
                    cols["image_format"].append(fmt)
                    for key, values in stats.items():
                        values.append(float(feats[key]))
                if cols["face"]:
                    writer.write_table(pa.table(cols, schema=SCHEMA))
                    written += len(cols["face"])
        finally:
            writer.close()
        if written == 0:
            rejections.close()
            raise StageFailed(f"no usable face among {faces_in} extracted face(s)")
    rejections.close()
    metrics: dict[str, float | int] = {"faces_in": faces_in, "faces": written, "rejected": len(rejections)}
    for key, values in stats.items():
        metrics[f"{key}_median"] = round(float(np.median(values)), 3)
    write_metrics(out, metrics)
    seconds = time.perf_counter() - started
    print(f"[{STAGE}] {identity}: {written}/{faces_in} faces aligned at {face_size} px, {seconds:.1f} s", flush=True)


def main() -> None:
    identity_main(STAGE, run)


if __name__ == "__main__":
    main()
