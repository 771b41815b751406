"""align@ID as `python -m stages.align src` on the output of a real extract run, with bad rows
planted in faces.parquet, and on the 640x480 sample footage when present."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from facedag.faces.align import template, transform_points
from facedag.faces.mesh import five_points
from tests.stages.test_extract import SAMPLES, make_clip, make_project, portrait, rejected, run_stage

FEATURES = ["yaw", "pitch", "roll", "luminance", "asymmetry", "contrast", "warmth", "cct",
            "sharpness", "mouth_open", "eyes_open"]  # fmt: skip
ALIGNED_COLUMNS = {
    "face": pa.string(),
    "clip": pa.string(),
    "frame": pa.int32(),
    "time": pa.float64(),
    "frame_width": pa.int32(),
    "frame_height": pa.int32(),
    "track": pa.int32(),
    "score": pa.float32(),
    "bbox": pa.list_(pa.float32(), 4),
    "landmarks": pa.list_(pa.float32(), 10),
    "face_size": pa.int32(),
    "matrix": pa.list_(pa.float64(), 6),
    **dict.fromkeys(FEATURES, pa.float32()),
    "image": pa.binary(),
    "image_format": pa.string(),
    "landmarks_from": pa.string(),
    "mesh": pa.list_(pa.float32(), 956),
    "blendshapes": pa.list_(pa.float32(), 52),
    "smile": pa.float32(),
}
ALIGN_METRICS = {"faces_in", "faces", "rejected", "faces_mesh", "faces_five_points"}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """extract@src on a short portrait clip, then two bad rows planted in faces.parquet."""
    clip = make_clip(tmp_path_factory.mktemp("clip") / "face.mp4", portrait(), frames=16)
    root = make_project(tmp_path_factory.mktemp("proj"), {"face.mp4": clip}, align={"image_format": "png"})
    proc = run_stage(root, "extract")
    assert proc.returncode == 0, proc.stderr
    faces = root / "data" / "extract" / "src" / "faces.parquet"
    table = pq.read_table(faces)
    bad = table.slice(0, 2).to_pylist()
    bad[0]["face"], bad[0]["crop"] = "broken crop", b"\xff\xd8 not a jpeg"
    bad[1]["face"], bad[1]["landmarks"] = "collapsed", [10.0] * 10
    pq.write_table(pa.concat_tables([table, pa.Table.from_pylist(bad, schema=table.schema)]), faces)
    proc = run_stage(root, "align")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    return root


def test_align_metrics_and_rejections(project: Path) -> None:
    metrics = json.loads((project / "data" / "align" / "src" / "metrics.json").read_text())
    assert set(metrics) >= ALIGN_METRICS
    extracted = json.loads((project / "data" / "extract" / "src" / "metrics.json").read_text())
    assert metrics["faces_in"] == extracted["faces"] + 2
    assert metrics["faces"] == extracted["faces"] and metrics["rejected"] == 2
    assert metrics["faces_mesh"] == metrics["faces"] and metrics["faces_five_points"] == 0
    assert rejected(project, "align") == {"broken crop": "undecodable_crop", "collapsed": "degenerate_landmarks"}


def test_aligned_table_columns_and_geometry(project: Path) -> None:
    path = project / "data" / "align" / "src" / "aligned.parquet"
    schema = pq.read_schema(path)
    assert {name: schema.field(name).type for name in schema.names} == ALIGNED_COLUMNS
    table = pd.read_parquet(path)
    assert (table["face_size"] == 64).all() and (table["image_format"] == "png").all()
    assert table[FEATURES].notna().all().all()
    assert table["yaw"].abs().max() < 30 and table["luminance"].between(0, 1).all()
    for row in table.itertuples():
        img = cv2.imdecode(np.frombuffer(row.image, np.uint8), cv2.IMREAD_UNCHANGED)
        assert img.shape == (64, 64, 3)
        m = np.asarray(row.matrix).reshape(2, 3)
        lm = np.asarray(row.landmarks, dtype=np.float64).reshape(5, 2)
        # the matrix maps FRAME px to the aligned face: the landmarks land near the template
        assert np.abs(transform_points(lm, m) - template(64)).max() < 0.12 * 64
        # the dense mesh, in aligned px, frames the face as the template does
        assert row.landmarks_from == "mesh"
        mesh = np.asarray(row.mesh, dtype=np.float64).reshape(478, 2)
        assert np.abs(five_points(mesh) - template(64)).max() < 0.08 * 64
        assert len(row.blendshapes) == 52 and 0 <= row.smile <= 1


def test_aligned_matrix_pastes_back_into_the_frame(project: Path) -> None:
    """The stored matrix's inverse puts the aligned face back where it was in the frame."""
    from facedag.faces.align import invert_affine
    from facedag.sources.media import iter_frames

    table = pd.read_parquet(project / "data" / "align" / "src" / "aligned.parquet")
    row = table.iloc[len(table) // 2]
    frame = next(f.image for f in iter_frames(project / "data" / "trim" / "src" / "clips" / "face.mp4")
                 if f.index == row["frame"])  # fmt: skip
    face = cv2.cvtColor(cv2.imdecode(np.frombuffer(row["image"], np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    m = np.asarray(row["matrix"]).reshape(2, 3)
    h, w = frame.shape[:2]
    back = cv2.warpAffine(face, invert_affine(m), (w, h), flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(np.full((64, 64), 255, np.uint8), invert_affine(m), (w, h)) == 255
    mask = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    diff = np.abs(back.astype(np.float32) - frame.astype(np.float32))[mask]
    assert mask.sum() > 500 and diff.mean() < 12


def test_align_fails_in_one_line_when_nothing_is_usable(tmp_path: Path) -> None:
    root = make_project(tmp_path, {})
    faces = root / "data" / "extract" / "src" / "faces.parquet"
    faces.parent.mkdir(parents=True)
    from facedag.tables import FACES_SCHEMA as SCHEMA

    row = {"face": "x", "clip": "c.mp4", "frame": 0, "time": 0.0, "frame_width": 64, "frame_height": 64,
           "track": 0, "score": 0.9, "bbox": [0, 0, 10, 10], "landmarks": [0.0] * 10, "crop": b"junk",
           "crop_matrix": [1, 0, 0, 0, 1, 0]}  # fmt: skip
    pq.write_table(pa.Table.from_pylist([row], schema=SCHEMA), faces)
    proc = run_stage(root, "align")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("align@src: error:")
    assert not (root / "data" / "align" / "src" / "aligned.parquet").exists()
    assert rejected(root, "align") == {"x": "undecodable_crop"}


@pytest.mark.skipif(not (SAMPLES / "video_02.mp4").exists(), reason="../shared/samples/video_02.mp4 is absent")
def test_align_on_sample_footage(tmp_path: Path) -> None:
    root = make_project(tmp_path, {"video_02.mp4": SAMPLES / "video_02.mp4"}, extract={"fps": 2})
    assert run_stage(root, "extract").returncode == 0
    proc = run_stage(root, "align")
    assert proc.returncode == 0, proc.stderr
    path = root / "data" / "align" / "src" / "aligned.parquet"
    schema = pq.read_schema(path)
    assert {name: schema.field(name).type for name in schema.names} == ALIGNED_COLUMNS
    metrics = json.loads((root / "data" / "align" / "src" / "metrics.json").read_text())
    assert metrics["faces"] == metrics["faces_in"] > 0
    assert metrics["faces_mesh"] >= 0.75 * metrics["faces"]  # a few profiles fall back to five points
    table = pd.read_parquet(path)
    assert table["yaw"].abs().max() > 10  # the hikers turn their heads
