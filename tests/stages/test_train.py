"""`python -m stages.train` as a subprocess, as DVC runs it: kill -9 mid-run and resume to the
bit (the last and the best model), SIGTERM checkpoints and stops, and a missing consent record
stops it with one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from tests.training.test_loop import tiny_data, tiny_project  # noqa: F401  (tiny_data is a fixture)

REPO = Path(__file__).resolve().parents[2]
# occluders on (facedag.training.occluders): their draws must replay after the kill too
DET = {"deterministic": True, "max_steps": 14, "checkpoint_every": 2, "eval_every": 7, "preview_every": 100,
       "keep_checkpoints": 3, "occluder_prob": 0.5}


def start(root: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(proc: subprocess.Popen, ckpt_dir: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not list(ckpt_dir.glob("step-*.pt")):
        assert proc.poll() is None, f"train exited early: {proc.communicate()[1]}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.005)


def weights(root: Path, name: str = "model") -> dict[str, torch.Tensor]:
    return load_file(str(root / "models" / f"{name}.safetensors"))


def test_kill_9_then_resume_equals_uninterrupted(tmp_path: Path, tiny_data: Path) -> None:  # noqa: F811
    ref_root = tiny_project(tmp_path / "ref", tiny_data, DET)
    run_root = tiny_project(tmp_path / "run", tiny_data, DET)
    ref = start(ref_root)  # the uninterrupted run, side by side
    victim = start(run_root)
    wait_for_checkpoint(victim, run_root / "models" / "checkpoints")
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL
    assert not (run_root / "models" / "model.safetensors").exists()  # it really died mid-run

    resumed = subprocess.run([sys.executable, "-m", "stages.train"], cwd=run_root, capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    line = next(ln for ln in resumed.stderr.splitlines() if "resumed from step" in ln)
    assert int(line.rsplit(" ", 1)[1]) > 0
    _, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err
    for name in ("model", "best"):  # the best of the evaluations at 7 and 14 is the same one too
        a, b = weights(ref_root, name), weights(run_root, name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((run_root / "models" / "model.json").read_text())["step"] == DET["max_steps"]
    best = [json.loads((r / "models" / "best.json").read_text()) for r in (ref_root, run_root)]
    assert best[0]["step"] == best[1]["step"] in (7, 14) and best[0]["info"]["score"] == best[1]["info"]["score"]


def test_sigterm_checkpoints_and_exits_143(tmp_path: Path, tiny_data: Path) -> None:  # noqa: F811
    root = tiny_project(tmp_path / "p", tiny_data, {**DET, "max_steps": 100000, "checkpoint_every": 1})
    proc = start(root)
    wait_for_checkpoint(proc, root / "models" / "checkpoints")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "got signal 15: checkpointing at step" in err
    record = json.loads((root / "models" / "model.json").read_text())
    assert record["info"]["stopped"] == "signal"
    newest = max(int(p.stem.split("-")[1]) for p in (root / "models" / "checkpoints").glob("step-*.pt"))
    assert newest == record["step"] > 0


def test_missing_consent_is_one_clear_line(tmp_path: Path, tiny_data: Path) -> None:  # noqa: F811
    root = tiny_project(tmp_path / "p", tiny_data, DET)
    params = yaml.safe_load((root / "params.yaml").read_text())
    del params["identities"]["dst"]["consent"]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    res = subprocess.run([sys.executable, "-m", "stages.train"], cwd=root, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train: error:") and "identities.dst" in lines[0]
    assert not (root / "models").exists()
