"""Checkpoints: round trip with every RNG, keep-last-K, corrupt newest falls back, stale ones move
aside (never deleted), and a pickle that would run code is refused without running it."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from facedag.training.checkpoint import (
    CheckpointRefused,
    capture_rng,
    find_resume,
    list_checkpoints,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from facedag.training.model import ModelConfig, build_model

CFG = ModelConfig(32, 8, 8, 16, ("src", "dst"))


def state(step: int, config: dict | None = None, dhash: str = "h1") -> dict:
    torch.manual_seed(step)
    model = build_model(CFG)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.rand(1, 3, 32, 32), "src").mean().backward()
    opt.step()
    return {"step": step, "model": model.state_dict(), "optimizer": opt.state_dict(), "scaler": None,
            "rng": capture_rng(), "config": config or CFG.to_dict(), "dataset_hash": dhash,
            "best": {"score": float("-inf"), "step": -1, "ref": float("-inf"), "waited": 0}, "early_stop": None}


def test_round_trip_with_rng_states(tmp_path: Path) -> None:
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    s = state(5)
    s["rng"] = capture_rng()
    s["best"] = {"score": 0.71, "step": 4, "ref": 0.7, "waited": 1}  # facedag.training.scoring.BestTracker.state_dict
    s["early_stop"] = {"step": 5, "patience": 1, "max_steps": 9}
    expect = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    path = save_checkpoint(tmp_path, s, keep=3)
    assert path.name == "step-000000005.pt"
    loaded = load_checkpoint(path)
    assert loaded["step"] == 5 and loaded["config"] == CFG.to_dict() and loaded["dataset_hash"] == "h1"
    assert loaded["best"] == s["best"] and loaded["early_stop"] == s["early_stop"]  # the ranking survives a resume
    for k, v in s["model"].items():
        assert torch.equal(v, loaded["model"][k])
    assert torch.equal(loaded["optimizer"]["state"][0]["exp_avg"], s["optimizer"]["state"][0]["exp_avg"])
    random.random(), np.random.rand(), torch.rand(1)  # move every generator on
    restore_rng(loaded["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expect


def test_keep_last_k(tmp_path: Path) -> None:
    for step in (10, 20, 30, 40):
        save_checkpoint(tmp_path, {"step": step}, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [40, 30]
    assert not list(tmp_path.glob(".*tmp*"))  # no temp files left behind


def test_corrupt_newest_falls_back_with_a_warning(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, state(10), keep=5)
    newest = save_checkpoint(tmp_path, state(20), keep=5)
    with open(newest, "r+b") as fh:
        fh.truncate(newest.stat().st_size // 2)
    logs: list[str] = []
    got = find_resume(tmp_path, CFG.to_dict(), "h1", logs.append)
    assert got is not None and got["step"] == 10
    assert any(line.startswith("warning:") and "step-000000020.pt" in line and "corrupt" in line for line in logs)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [10]  # the corrupt one was moved aside, not deleted
    assert len(list(tmp_path.glob("corrupt-*/step-000000020.pt"))) == 1


@pytest.mark.parametrize("change", ["config", "data"])
def test_stale_checkpoints_move_aside(tmp_path: Path, change: str) -> None:
    save_checkpoint(tmp_path, state(10), keep=5)
    save_checkpoint(tmp_path, state(20), keep=5)
    live = tmp_path.parent / f"live-{change}"
    live.mkdir()
    (live / "metrics.json").write_text("{}")
    cfg = CFG.to_dict() | ({"bottleneck": 32} if change == "config" else {})
    logs: list[str] = []
    got = find_resume(tmp_path, cfg, "h2" if change == "data" else "h1", logs.append, stale_extra=[live])
    assert got is None
    assert list_checkpoints(tmp_path) == []
    stale = list(tmp_path.glob("stale-*"))
    assert len(stale) == 1 and sorted(p.name for p in stale[0].iterdir()) == [
        f"live-{change}", "step-000000010.pt", "step-000000020.pt"]
    word = "model config changed" if change == "config" else "dataset changed"
    assert any(line.startswith("starting fresh") and word in line for line in logs)


class Evil:
    """Unpickling this calls open(marker, "w"): it would create a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_code_running_pickle_is_refused(tmp_path: Path, how: str) -> None:
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "ckpts"
    ckpt.mkdir()
    path = ckpt / "step-000000050.pt"
    if how == "torch.save":
        torch.save({"step": 50, "payload": Evil(marker)}, path)
    else:
        path.write_bytes(pickle.dumps({"step": 50, "payload": Evil(marker)}))
    assert not marker.exists()
    with pytest.raises(CheckpointRefused, match=r"refused .*step-000000050\.pt.*would run code.*not executed"):
        load_checkpoint(path)
    assert not marker.exists()
    # and resume refuses it too, warns, moves it aside, and falls back to the one before
    save_checkpoint(ckpt, state(40), keep=5)
    logs: list[str] = []
    got = find_resume(ckpt, CFG.to_dict(), "h1", logs.append)
    assert got is not None and got["step"] == 40
    assert not marker.exists()
    assert any("refused" in line and "step-000000050.pt" in line for line in logs)
    assert os.path.exists(next(ckpt.glob("refused-*")) / "step-000000050.pt")


def test_writer_writes_the_state_as_it_was_when_submitted(tmp_path: Path) -> None:
    """The background writer copies the state at submit: the live tensors may change while it writes."""
    from facedag.training.checkpoint import CheckpointWriter

    s = state(7)
    expect = {k: v.clone() for k, v in s["model"].items()}
    writer = CheckpointWriter(tmp_path, keep=2)
    writer.submit(s)
    with torch.no_grad():
        for v in s["model"].values():
            v.add_(1.0)  # the next steps, while the thread writes
    writer.wait()
    loaded = load_checkpoint(list_checkpoints(tmp_path)[0][1])
    assert all(torch.equal(loaded["model"][k], v) for k, v in expect.items())
    for step in (8, 9):
        writer.submit({"step": step})
    writer.wait()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [9, 8]  # keep-last-K still holds
    # a failed write surfaces in the training thread at the next wait
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    writer = CheckpointWriter(blocked, keep=2)
    writer.submit({"step": 1})
    with pytest.raises(OSError):
        writer.wait()
