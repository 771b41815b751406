"""align@ID: warp every extracted face to the canonical template and measure it.

    python -m stages.align <ID>

Reads `data/extract/<ID>/faces.parquet` in record batches (never whole in memory), warps
each loose crop to `base.face_size` with the similarity from its landmarks (`align.landmarker`)
to the template and measures pose, lighting, sharpness and expression (facedag.faces.measure), and
streams `data/align/<ID>/aligned.parquet` (temp file, moved into place at the end):

    face, clip, frame, time, frame_width, frame_height, track, score, bbox, landmarks
                 as in faces.parquet (landmarks in FRAME px)
    face_size    int32    side of the aligned image
    matrix       fixed_size_list<float64>[6]  2x3 row-major, FRAME px -> ALIGNED px
                 (convert pastes back with its inverse, facedag.faces.align.invert_affine)
    yaw, pitch, roll                      float32 degrees (facedag.faces.features.head_pose signs)
    luminance, asymmetry, contrast, warmth, cct   float32 (facedag.faces.features.lighting)
    sharpness    float32  variance of the Laplacian of the aligned luma over the face mask
    mouth_open, eyes_open                 float32 jawOpen and 1 - mean blink from the blendshapes;
                 image proxies (facedag.faces.features.expression) for a five-point face
    image        binary   the aligned RGB face, encoded as `align.image_format`
    image_format string   "jpg" or "png"
    landmarks_from string "mesh" (the landmarker's 478 points) or "five_points" (its fallback)
    mesh         fixed_size_list<float32>[956]  478 (x, y) in ALIGNED px; null for five points
    blendshapes  fixed_size_list<float32>[52]   facedag.faces.mesh.BLENDSHAPES; null for five points
    smile        float32  mean of mouthSmileLeft/Right; null for five points

Rejected (item = face): `undecodable_crop` (the crop bytes do not decode),
`degenerate_landmarks` (non-finite, collapsed or mirrored points; a matrix that is not a
similarity), `pose_failed` (PnP found no pose), `internal_error` (anything unforeseen with
one face; the others go on). Fails with one line when no face is left.

metrics.json: faces_in, faces, rejected, faces_mesh and faces_five_points (which landmarks each
face got), and the medians of yaw, pitch, sharpness, luminance.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from facedag.faces.landmarkers import LANDMARKERS
from facedag.faces.measure import measure_face
from facedag.params import Params
from facedag.records import Rejected, Rejections, StageFailed, atomic_path, write_metrics
from facedag.stagekit import fresh_dir, identity_main
from facedag.tables import (
    ALIGNED_SCHEMA,
    FACE_COLUMNS,
    FACES_SCHEMA,
    FEATURES,
    TableWriter,
    decode_image,
    encode_image,
    missing_columns,
)

STAGE = "align"
READ_BATCH = 64  # faces read, aligned and written per step: bounds memory


def run(params: Params, identity: str) -> None:
    face_size = params.base.face_size
    fmt = params.align.image_format
    src = Path("data") / "extract" / identity / "faces.parquet"
    if not src.exists():
        raise StageFailed(f"{src} not found: run extract first")
    out = fresh_dir(Path("data") / STAGE / identity)
    rejections = Rejections(out, STAGE)
    started = time.perf_counter()
    faces_in = 0
    stats: dict[str, list[float]] = {k: [] for k in ("yaw", "pitch", "sharpness", "luminance")}
    missing = missing_columns(src, FACES_SCHEMA)
    if missing:
        raise StageFailed(f"{src} lacks column(s) {', '.join(missing)}: rerun extract")
    carried = [name for name, _ in FACE_COLUMNS]
    sources = {"mesh": 0, "five_points": 0}
    with LANDMARKERS.get(params.align.landmarker)() as landmarker, atomic_path(out / "aligned.parquet") as tmp:
        with TableWriter(tmp, ALIGNED_SCHEMA) as writer:
            for batch in pq.ParquetFile(src).iter_batches(batch_size=READ_BATCH):
                rows = batch.to_pylist()
                faces_in += len(rows)
                for row in rows:
                    frame_shape = (int(row["frame_height"] or 0), int(row["frame_width"] or 0))
                    try:
                        crop = decode_image(row["crop"])
                        if crop is None:
                            raise Rejected("undecodable_crop", "the crop image does not decode")
                        face = measure_face(crop, row["crop_matrix"], row["landmarks"], frame_shape, face_size,
                                            landmarker)  # fmt: skip
                        data = encode_image(face.image, fmt, params.align.jpeg_quality)
                    except Rejected as exc:
                        rejections.add_error(row["face"], exc)
                        continue
                    except Exception as exc:  # one bad face must not stop the batch
                        rejections.add(row["face"], "internal_error", f"{type(exc).__name__}: {exc}"[:300])
                        continue
                    mesh, found = face.mesh, face.landmarks
                    writer.add(
                        **{name: row[name] for name in carried}, face_size=face_size,
                        matrix=face.matrix.reshape(-1).tolist(),
                        **{name: float(face.features[name]) for name in FEATURES},
                        image=data, image_format=fmt, landmarks_from=found.source,
                        mesh=None if mesh is None else mesh.reshape(-1).tolist(),
                        blendshapes=None if found.blendshapes is None else found.blendshapes.tolist(),
                        smile=face.features.get("smile"),
                    )  # fmt: skip
                    sources[found.source] += 1
                    for key, values in stats.items():
                        values.append(float(face.features[key]))
        written = writer.count
        if written == 0:
            rejections.close()
            raise StageFailed(f"no usable face among {faces_in} extracted face(s)")
    rejections.close()
    metrics: dict[str, float | int] = {"faces_in": faces_in, "faces": written, "rejected": len(rejections),
                                       "faces_mesh": sources["mesh"], "faces_five_points": sources["five_points"]}
    for key, values in stats.items():
        metrics[f"{key}_median"] = round(float(np.median(values)), 3)
    write_metrics(out, metrics)
    seconds = time.perf_counter() - started
    print(f"[{STAGE}] {identity}: {written}/{faces_in} faces aligned at {face_size} px "
          f"({sources['mesh']} with the mesh, {sources['five_points']} with five points), {seconds:.1f} s", flush=True)


def main() -> None:
    identity_main(STAGE, run)


if __name__ == "__main__":
    main()
