"""evaluate: the model part on a tiny real training run (its figures match what training
recorded for the best weights), and the video part on planted videos and on a real convert."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facedag.quality.evaluate_model import evaluate_model
from facedag.quality.evaluate_video import evaluate_video
from facedag.training.loop import train
from tests.training.test_loop import load, tiny_data, tiny_project  # noqa: F401  (tiny_data is a fixture)

REPO = Path(__file__).resolve().parents[2]


def test_evaluate_model_scores_the_held_out_faces(tmp_path: Path, tiny_data: Path) -> None:  # noqa: F811
    root = tiny_project(tmp_path / "p", tiny_data, {"deterministic": True})
    train(load(root), root, log=lambda _msg: None)
    scores = evaluate_model(root / "models", root / "data" / "dedupe", ["src", "dst"], name="best")
    best = json.loads((root / "models" / "best.json").read_text())["info"]["held_out"]
    for ident in ("src", "dst"):
        assert scores[ident]["faces"] == 4  # holdout.parquet: one track of 4 faces
        assert 0 < scores[ident]["ssim"] < 1 and scores[ident]["psnr"] > 5 and 0 < scores[ident]["l1"] < 1
        # the same faces, weights and face region as training's own evaluation of its best step
        assert scores[ident]["ssim"] == pytest.approx(best[ident]["ssim"], abs=0.02)
        assert scores[ident]["psnr"] == pytest.approx(best[ident]["psnr"], abs=0.5)

    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "stages.evaluate_model"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((root / "data/evaluate/model/metrics.json").read_text())
    assert metrics["src"]["faces"] == 4 and metrics["mean_ssim"] == pytest.approx(
        (metrics["src"]["ssim"] + metrics["dst"]["ssim"]) / 2)


def test_evaluate_model_without_a_model_is_one_line(tmp_path: Path, tiny_data: Path) -> None:  # noqa: F811
    root = tiny_project(tmp_path / "p", tiny_data)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "stages.evaluate_model"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "best.safetensors not found" in lines[0]


def test_evaluate_video_on_an_identical_video() -> None:
    """Noise frames (no face for RetinaFace to find): flicker 1, seam 0, colour gap 0."""
    from facedag.faces.detect import FaceDetector

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (72, 96, 3), np.uint8) for _ in range(6)]
    masks = []
    for i in range(6):
        m = np.zeros((72, 96), np.uint8)
        m[20 + i : 50 + i, 30:70] = 255
        masks.append(m if i != 3 else None)
    summary, rows = evaluate_video(iter(frames), iter(frames), iter(masks), FaceDetector(), batch=4)
    assert summary["frames"] == 6 and summary["frames_swapped"] == 5 and len(rows) == 6
    assert summary["flicker"] == pytest.approx(1.0) and summary["seam"] == 0 and summary["colour_gap"] == 0
    assert [r["swapped"] for r in rows] == [1, 1, 1, 0, 1, 1]
    assert summary["goals"]["flicker"]["met"] and summary["goals"]["colour_gap"]["met"]
    assert summary["detect_rate"] == 0  # a swapped frame where no face is found counts against it
