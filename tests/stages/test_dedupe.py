"""dedupe@ID as a subprocess on a synthetic aligned.parquet built from real face images: the
training set, and the held-out shots beside it."""

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

from facedag.records import atomic_write_json
from facedag.tables import ALIGNED_SCHEMA as SCHEMA
from tests.conftest import REPO, tool_env
from tests.curation.test_curate import planted
from tests.curation.test_target_profile import planted as planted_target

PARAMS = {
    "identities": {"src": {"consent": {"subject": "test", "basis": "licence", "evidence": "licence.txt",
                                       "evidence_sha256": "0" * 64, "scope": "tests"}, "sources": [{"uri": "x.mp4"}]}},
    "target": {"uri": "t.mp4"},
}


def write_aligned(root, names, images, table, bad_image_at=None, clips=None):
    rows = {name: [] for name in SCHEMA.names}
    for i, (name, img) in enumerate(zip(names, images, strict=True)):
        ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        assert ok
        feats = table.iloc[i]
        values = {
            "face": name, "clip": clips[i] if clips else "clip.mp4", "frame": i, "time": i / 25,
            "frame_width": 640, "frame_height": 480,
            "track": 0, "score": 0.99, "bbox": [0, 0, 64, 64], "landmarks": [0.0] * 10, "face_size": 64,
            "matrix": [1.0, 0, 0, 0, 1.0, 0], "image": b"not an image" if i == bad_image_at else buf.tobytes(),
            "image_format": "png", "landmarks_from": "five_points", "mesh": None, "blendshapes": None, "smile": None,
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
    # one clip: nothing honest to hold out, and it says so
    assert len(pd.read_parquet(out / "holdout.parquet")) == 0
    assert "warning: no held-out set (only one shot" in proc.stderr
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
    assert metrics["no_holdout"] is True and metrics["faces_holdout"] == metrics["shots_holdout"] == 0
    assert 0 < metrics["bins_covered"] <= metrics["bins_total"] == 7 * 5 * 3 * 3
    assert metrics["entropy_bits"] > 0
    png = (out / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


# Shots (trim's scenes) of the planted faces. Shot s0 is the smallest, so it is the one held out
# whatever the seed (no shot fits 0.15 of 12 faces: the smallest goes), and it is two clips: the
# segments trim cut from one long shot, which must stay together.
SHOTS = {
    "aaaa_0000.mp4": ("aaaa", 0, ["base"]),
    "aaaa_0001.mp4": ("aaaa", 0, ["turned"]),
    "aaaa_0002.mp4": ("aaaa", 1, ["copy", "shift1", "shift2"]),
    "bbbb_0000.mp4": ("bbbb", 0, ["noise", "jpeg", "looks_up"]),
    "bbbb_0001.mp4": ("bbbb", 1, ["mirrored", "brighter", "hopper", "hopper_noise"]),
}


def write_shots(root):
    """The planted faces in the clips of SHOTS, with trim's selection.parquet naming their shots;
    returns (names, feature table)."""
    names, images, table, _ = planted()
    clip_of = {face: clip for clip, (_, _, faces) in SHOTS.items() for face in faces}
    write_aligned(root, names, images, table, clips=[clip_of[n] for n in names])
    trim = root / "data/trim/src"
    trim.mkdir(parents=True)
    pd.DataFrame([{"shot": c[:-4], "sha256": sha, "scene": scene, "clip": c} for c, (sha, scene, _) in SHOTS.items()]
                 ).to_parquet(trim / "selection.parquet")
    return names, table


def test_dedupe_stage_holds_out_whole_shots_and_their_near_copies(tmp_path):
    names, _ = write_shots(tmp_path)
    proc = run_stage(tmp_path, PARAMS)
    assert proc.returncode == 0, proc.stderr

    out = tmp_path / "data/dedupe/src"
    dataset, holdout = pd.read_parquet(out / "dataset.parquet"), pd.read_parquet(out / "holdout.parquet")
    assert list(holdout.columns) == list(dataset.columns) and sorted(holdout["rank"]) == [1, 2]
    assert set(holdout["face"]) == {"base", "turned"} and set(holdout["clip"]) == {"aaaa_0000.mp4", "aaaa_0001.mp4"}
    assert not set(holdout["clip"]) & set(dataset["clip"]) and not set(holdout["face"]) & set(dataset["face"])
    # every copy of the held-out base went, though it came from other shots
    reasons = {r["item"]: r for r in map(json.loads, (out / "rejected.jsonl").read_text().splitlines())}
    leaks = {"copy", "shift1", "shift2", "noise", "jpeg"}
    assert {n for n, r in reasons.items() if r["reason"] == "near_holdout"} == leaks
    assert "nearly copies base of held-out clip aaaa_0000.mp4" in reasons["copy"]["message"]
    assert set(dataset["face"]) == {"looks_up", "mirrored", "brighter", "hopper"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["faces_holdout"], metrics["shots_holdout"], metrics["clips_holdout"], metrics["shots"]) == (
        2, 1, 2, 4)
    assert metrics["near_holdout"] == len(leaks) and metrics["no_holdout"] is False
    assert metrics["kept"] + metrics["faces_holdout"] + metrics["duplicates"] + metrics["near_holdout"] == len(names)
    assert "held out 2 faces of 1 of 4 shots" in proc.stdout


def test_the_same_picture_in_every_shot_cannot_be_held_out(tmp_path):
    names, images, table, _ = planted()
    keep = [names.index(n) for n in ("base", "copy", "noise")]  # near-copies of one face, in two clips
    write_aligned(tmp_path, [names[i] for i in keep], [images[i] for i in keep], table.iloc[keep],
                  clips=["a.mp4", "b.mp4", "b.mp4"])
    proc = run_stage(tmp_path, PARAMS)
    assert proc.returncode == 0, proc.stderr
    assert "no held-out set (every training face nearly copies a face of the held-out shots)" in proc.stderr
    out = tmp_path / "data/dedupe/src"
    assert json.loads((out / "metrics.json").read_text())["no_holdout"] is True
    assert list(pd.read_parquet(out / "dataset.parquet")["face"]) == ["base"]
    assert len(pd.read_parquet(out / "holdout.parquet")) == 0


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


def test_the_held_out_split_keeps_the_only_shot_of_the_targets_pose(tmp_path):
    """Unweighted, shot aaaa#0 (base, turned) is held out (above). When the target turns like
    `turned`, the only face at that pose, that shot stays in training and another goes."""
    names, table = write_shots(tmp_path)
    turned = table.iloc[names.index("turned")]
    pose = {"yaw": float(turned["yaw"]), "pitch": float(turned["pitch"])}
    assert (table["yaw"] > pose["yaw"] - 8).sum() == 1  # nothing else near that yaw
    (tmp_path / "data/profile/src").mkdir(parents=True)
    atomic_write_json(tmp_path / "data/profile/src/target.json", planted_target([(10, pose)]).to_dict())
    proc = run_stage(tmp_path, PARAMS)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "data/dedupe/src"
    dataset, holdout = pd.read_parquet(out / "dataset.parquet"), pd.read_parquet(out / "holdout.parquet")
    assert "turned" in set(dataset["face"]) and "turned" not in set(holdout["face"])
    assert len(holdout) > 0 and not set(holdout["clip"]) & {"aaaa_0000.mp4", "aaaa_0001.mp4"}


def test_dedupe_stage_weights_toward_the_target_and_reports_its_gaps(tmp_path):
    names, images, table, _ = planted()
    write_aligned(tmp_path, names, images, table)
    params = {**PARAMS, "dedupe": {"max_faces": 1}}
    proc = run_stage(tmp_path, params)  # no profile: unweighted, and it says so
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "data/dedupe/src"
    assert list(pd.read_parquet(out / "dataset.parquet")["face"]) != ["turned"]
    assert "dedupe@src: target: no target profile" in proc.stdout
    assert json.loads((out / "target_gaps.json").read_text())["weighted"] is False
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["target_weighted"], metrics["target_gaps"]) == (False, 0)

    # the target turns 20 degrees half of the time (the pose and lighting of `turned`), 50 the other half
    turned = table.iloc[names.index("turned")]
    light = {"luminance": float(turned["luminance"]), "asymmetry": float(turned["asymmetry"])}
    profile = planted_target([(10, {"yaw": 20.0, "pitch": 0.0, **light}), (10, {"yaw": 50.0, "pitch": 0.0, **light})])
    (tmp_path / "data/profile/src").mkdir(parents=True)
    atomic_write_json(tmp_path / "data/profile/src/target.json", profile.to_dict())
    proc = run_stage(tmp_path, params)
    assert proc.returncode == 0, proc.stderr
    # a budget of one face: the sharpest face of the target's bin, not the sharpest of all
    assert list(pd.read_parquet(out / "dataset.parquet")["face"]) == ["turned"]
    report = json.loads((out / "target_gaps.json").read_text())
    assert report["weighted"] is True and report["target_faces"] == 20 and report["min_faces"] == 10
    lines = report["lines"]
    assert "the target has 50 % of its frames at yaw 8.6..26 deg; src has 1 face there" in lines
    assert ("the target has 50 % of its frames at yaw >= 43 deg (turned toward the image right); "
            "src has 0 faces there") in lines
    in_pitch = int((table["pitch"].abs() < 8).sum())
    assert f"the target has 100 % of its frames at pitch -8..8 deg; src has 1 face there ({in_pitch} before dedupe)" \
        in lines
    assert len(lines) == 5  # yaw x2, pitch, luminance, light direction; no pose cell repeats them
    for line in lines:
        assert f"dedupe@src: target gap: {line}" in proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["target_coverage"] == 0.5 and metrics["target_coverage_in"] == 0.5
    assert metrics["target_coverage_light"] == 1.0 and metrics["target_gaps"] == 5
    assert "dedupe@src: target: 20 faces in 20 sampled frames, weighted 1; 50 % of its frames" in proc.stdout
