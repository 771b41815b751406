"""dedupe's identity check on real faces: an aligned.parquet of one person (the astronaut
portrait moved, scaled, turned and relit) with two planted faces of other people (Grace
Hopper, and a guest of the sample footage when present): those two, and only those, are
dropped as `identity_outlier`, by the library and by the dedupe stage. Measured here: the
astronaut's versions score 0.94-0.99 against the mean face, Hopper 0.26, the guest 0.09; the
limit used is 0.3 (the default 0.2 drops only the clearest cases)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from facedag.curation.dedupe import scan_faces
from facedag.curation.identity_outliers import drop_faces, identity_check
from facedag.faces.align import align_face, aligned_matrix
from facedag.faces.detect import FaceDetector
from facedag.faces.identity import Embedder
from facedag.tables import ALIGNED_SCHEMA, FEATURES, encode_image
from tests.faces.test_identity import portraits
from tests.stages.test_dedupe import PARAMS, run_stage
from tests.stages.test_extract import SAMPLES

LIMIT = 0.3


def variants(image: np.ndarray, n: int) -> list[np.ndarray]:
    """`n` versions of a portrait: shifted, scaled, turned a little, lighter or darker."""
    h, w = image.shape[:2]
    out = []
    for k in range(n):
        m = cv2.getRotationMatrix2D((w / 2, h / 3), 6 * np.sin(k), 0.8 + 0.05 * (k % 4))
        m[:, 2] += (7 * k - 20, 3 * (k % 3))
        img = cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
        out.append(np.clip(img.astype(np.float32) * (0.8 + 0.06 * k), 0, 255).astype(np.uint8))
    return out


def others() -> list[np.ndarray]:
    faces = [portraits()["hopper"]]
    video = SAMPLES / "video_01.mp4"
    if video.exists():
        from facedag.sources.media import iter_frames

        faces.append(next(iter_frames(video)).image)
    return faces


def write_aligned(path, images: list[np.ndarray], names: list[str]) -> None:
    det = FaceDetector(min_size=20)
    rows = []
    for i, (name, img) in enumerate(zip(names, images, strict=True)):
        face = max(det.detect(img), key=lambda d: d.area)
        m = aligned_matrix(face.landmarks, 96)
        aligned = align_face(img, m, 96)
        rows.append({"face": name, "clip": f"clip{i % 3}.mp4", "frame": i, "time": i / 25.0,
                     "frame_width": img.shape[1], "frame_height": img.shape[0], "track": 0, "score": face.score,
                     "bbox": list(face.bbox), "landmarks": face.landmarks.reshape(-1).tolist(), "face_size": 96,
                     "matrix": m.reshape(-1).tolist(), **dict.fromkeys(FEATURES, 0.0), "sharpness": 100.0 + i,
                     "yaw": float(i), "image": encode_image(aligned, "png"), "image_format": "png"})  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=ALIGNED_SCHEMA), path)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("outliers")
    own = variants(portraits()["astronaut"], 10)
    other = others()
    names = [f"astronaut{k}" for k in range(len(own))] + [f"other{k}" for k in range(len(other))]
    images = own[:4] + other + own[4:]  # the others in the middle of the table
    names = names[:4] + names[len(own):] + names[4 : len(own)]
    write_aligned(root / "data/align/src/aligned.parquet", images, names)
    return root, {n for n in names if n.startswith("other")}


def test_identity_check_flags_the_others(planted) -> None:
    root, expected = planted
    source = pq.ParquetFile(root / "data/align/src/aligned.parquet")
    scan = scan_faces(source, lambda *_: None)
    check = identity_check(source, scan, LIMIT, Embedder())
    assert check.judged == len(scan.ids)
    assert {scan.ids[i] for i in np.flatnonzero(check.outlier)} == expected
    own = [s for i, s in enumerate(check.similarity) if scan.ids[i] not in expected]
    assert min(own) > 0.5
    kept = drop_faces(scan, check.outlier)
    assert len(kept.ids) == len(scan.ids) - len(expected) and not expected & set(kept.ids)
    assert [scan.rows[scan.ids.index(f)] for f in kept.ids] == kept.rows


def test_dedupe_stage_drops_identity_outliers(planted) -> None:
    root, expected = planted
    proc = run_stage(root, {**PARAMS, "dedupe": {"min_sharpness": 1, "holdout": 0,
                                                 "identity_outlier": LIMIT}})
    assert proc.returncode == 0, proc.stderr
    out = root / "data/dedupe/src"
    rows = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    outliers = {r["item"] for r in rows if r["reason"] == "identity_outlier"}
    assert outliers == expected and all("cosine" in r["message"] for r in rows if r["item"] in expected)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["identity_outliers"] == len(expected) and metrics["undecodable"] == 0
    dataset = pq.read_table(out / "dataset.parquet", columns=["face"]).column("face").to_pylist()
    assert not expected & set(dataset)
    # -1 turns the check off
    proc = run_stage(root, {**PARAMS, "dedupe": {"min_sharpness": 1, "holdout": 0, "identity_outlier": -1}})
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "metrics.json").read_text())["identity_outliers"] == 0
