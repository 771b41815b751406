"""dedupe@ID as a subprocess on a synthetic aligned.parquet built from real face images."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from facedag.tables import ALIGNED_SCHEMA as SCHEMA
from tests.conftest import REPO, tool_env
from tests.test_curate import planted

PARAMS = {
    "identities": {"src": {"consent": {"subject": "test", "basis": "licence", "evidence": "licence.txt",
                                       "evidence_sha256": "0" * 64, "scope": "tests"}, "sources": [{"uri": "x.mp4"}]}},
    "target": {"uri": "t.mp4"},
}


def write_aligned(root, names, images, table, bad_image_at=None):
    rows = {name: [] for name in SCHEMA.names}
    for i, (name, img) in enumerate(zip(names, images, strict=True)):
        ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        assert ok
        feats = table.iloc[i]
        values = {
            "face": name, "clip": "clip.mp4", "frame": i, "time": i / 25, "frame_width": 640, "frame_height": 480,
            "track": 0, "score": 0.99, "bbox": [0, 0, 64, 64], "landmarks": [0.0] * 10, "face_size": 64,
            "matrix": [1.0, 0, 0, 0, 1.0, 0], "image": b"not an image" if i == bad_image_at else buf.tobytes(),
            "image_format": "png",
        }
        for col in SCHEMA.names:
            rows[col].append(values[col] if col in values else float(feats.get(col, 0.0)))
    out = root / "data/align/src"
    out.mkdir(parents=True)
    pq.write_table(pa.table(rows, schema=SCHEMA), out / "aligned.parquet")


def run_stage(root, params):
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    env = tool_env()
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "stages.dedupe", "src"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


def test_dedupe_stage_writes_a_balanced_dataset(tmp_path):
    names, images, table, expected = planted()
    blurry = cv2.GaussianBlur(images[names.index("hopper")], (0, 0), 3)
    names, images = [*names, "blurry", "broken"], [*images, blurry, images[0]]
    table = pd.concat([table, table.iloc[[names.index("hopper")]].assign(sharpness=3.0),
                       table.iloc[[0]]], ignore_index=True)
    write_aligned(tmp_path, names, images, table, bad_image_at=len(names) - 1)
    params = {**PARAMS, "dedupe": {"min_sharpness": 10, "phash_distance": 10, "feature_distance": 0.1,
                                   "max_faces": 5}}
    proc = run_stage(tmp_path, params)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr

    out = tmp_path / "data/dedupe/src"
    dataset = pd.read_parquet(out / "dataset.parquet")
    assert len(dataset) == 5
    assert {*SCHEMA.names, "bin", "bin_label", "phash", "rank"} <= set(dataset.columns)
    assert sorted(dataset["rank"]) == [1, 2, 3, 4, 5]
    assert dataset["phash"].str.fullmatch(r"[0-9a-f]{16}").all()
    duplicates = {n for n, e in expected.items() if e}
    assert not (set(dataset["face"]) & (duplicates | {"blurry", "broken"}))
    for blob in dataset["image"]:
        assert cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR).shape == (64, 64, 3)

    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    reasons = {r["item"]: r["reason"] for r in rejected}
    assert {n for n, r in reasons.items() if r == "near_duplicate"} == duplicates
    assert reasons["blurry"] == "blurry" and reasons["broken"] == "undecodable_image"
    assert all(r["stage"] == "dedupe" for r in rejected)
    kept_or_over = set(names) - duplicates - {"blurry", "broken"}
    assert {n for n, r in reasons.items() if r == "over_budget"} == kept_or_over - set(dataset["face"])

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["faces_in"] == len(names) and metrics["kept"] == 5
    assert metrics["duplicates"] == len(duplicates) and metrics["blurry"] == 1 and metrics["undecodable"] == 1
    assert metrics["kept"] + metrics["duplicates"] + metrics["blurry"] + metrics["over_budget"] + 1 == len(names)
    assert 0 < metrics["bins_covered"] <= metrics["bins_total"] == 7 * 5 * 3 * 3
    assert metrics["entropy_bits"] > 0
    png = (out / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_dedupe_stage_fails_in_one_line_when_nothing_is_left(tmp_path):
    names, images, table, _ = planted()
    write_aligned(tmp_path, names, images, table)
    proc = run_stage(tmp_path, {**PARAMS, "dedupe": {"min_sharpness": 1e9}})
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("dedupe@src: error: no face kept")


def test_dedupe_stage_without_input_fails_clearly(tmp_path):
    proc = run_stage(tmp_path, PARAMS)
    assert proc.returncode == 1 and "run align@src first" in proc.stderr
