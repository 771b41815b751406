"""One model on several processes through real torchrun, gloo on the CPU, as the train stage runs it
(FACEDAG_GPUS): 2 and 3 ranks end with equal weights and only rank 0 wrote under models/; a run
killed with -9 and resumed (same world size) equals an uninterrupted one; a SIGTERM to the
stage checkpoints and exits 143; two torchrun launchers with one rendezvous on 127.0.0.1 (two
"machines") train the same model as one launcher with two processes.

Which process wrote what is recorded by a Python audit hook (sitecustomize on PYTHONPATH) in
every rank: opens for writing, renames, removals and new folders under models/."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from facedag.training.checkpoint import list_checkpoints, load_checkpoint
from tests.training.test_loop import plant_yaw, tiny_data, tiny_project  # noqa: F401  (tiny_data is a fixture)

REPO = Path(__file__).resolve().parents[2]
# batch 6: splits evenly among 2 and 3 ranks
DDP = {"deterministic": True, "max_steps": 6, "batch_size": 6, "checkpoint_every": 2, "eval_every": 3,
       "preview_every": 3, "keep_checkpoints": 2}

AUDIT = '''
import atexit, os, sys
_models = os.path.realpath(os.path.join(os.getcwd(), "models"))
_rank = os.environ.get("RANK")
_seen = []

def _hook(event, args):
    if event == "open":
        path, mode, flags = args
        writes = (mode is not None and any(c in str(mode) for c in "wax+")) or (
            mode is None and isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        paths = [path] if writes else []
    elif event in ("os.rename", "os.remove", "os.mkdir", "os.rmdir", "shutil.move"):
        paths = list(args[:2])
    else:
        return
    for p in paths:
        if isinstance(p, (str, bytes, os.PathLike)):
            real = os.path.realpath(os.fsdecode(p))
            if real.startswith(_models):
                _seen.append(f"{event} {real}")

def _dump():
    out = os.environ["AUDIT_DIR"]
    with open(os.path.join(out, f"rank-{_rank}-{os.getpid()}.txt"), "w") as fh:
        fh.write("\\n".join(_seen))

if _rank is not None and os.environ.get("AUDIT_DIR"):
    sys.addaudithook(_hook)
    atexit.register(_dump)
'''


def env_for(tmp: Path, **extra: str) -> dict[str, str]:
    hook = tmp / "audit-hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(AUDIT)
    audit = tmp / "audit"
    audit.mkdir(exist_ok=True)
    return dict(os.environ, PYTHONPATH=f"{hook}{os.pathsep}{REPO}", PYTHONUNBUFFERED="1", AUDIT_DIR=str(audit),
                OMP_NUM_THREADS="1", **extra)


def stage(root: Path, env: dict[str, str], **kw: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def finished(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def writes_by_rank(audit: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in audit.glob("rank-*.txt"):
        out.setdefault(f.name.split("-")[1], []).extend(ln for ln in f.read_text().splitlines() if ln)
    return out


def model(root: Path) -> dict[str, torch.Tensor]:
    return load_file(str(root / "models" / "model.safetensors"))


@pytest.mark.parametrize("nproc", [2, 3])
def test_ranks_end_equal_and_only_rank_0_writes(tmp_path: Path, tiny_data: Path, nproc: int) -> None:  # noqa: F811
    root = tiny_project(tmp_path / "p", tiny_data, DDP)
    env = env_for(tmp_path, FACEDAG_GPUS=str(nproc))
    rc, err = finished(stage(root, env))
    assert rc == 0, err
    record = json.loads((root / "models" / "model.json").read_text())
    info = record["info"]
    assert record["step"] == 6 and info["world_size"] == nproc and info["batch_size"] == 6
    assert len(info["weights_sha256"]) == nproc and len(set(info["weights_sha256"])) == 1  # every rank, in step
    assert f"over {nproc} processes" in err and "warning: the" not in err
    writes = writes_by_rank(tmp_path / "audit")
    assert set(writes) == {str(r) for r in range(nproc)}  # every rank reported
    assert any("model.safetensors" in w for w in writes["0"]) and any("checkpoints" in w for w in writes["0"])
    assert all(writes[str(r)] == [] for r in range(1, nproc)), {r: w[:3] for r, w in writes.items()}


def wait_for_checkpoint(proc: subprocess.Popen, root: Path) -> Path:
    """Wait (up to 120 s) until the running stage `proc` has written a checkpoint under `root`;
    returns the checkpoint folder."""
    ckpts = root / "models" / "checkpoints"
    deadline = time.monotonic() + 120
    while not list(ckpts.glob("step-*.pt")):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    return ckpts


@pytest.mark.parametrize("options", ["plain", "gan_uniform_yaw"])
def test_killed_and_resumed_equals_uninterrupted(tmp_path: Path, tiny_data: Path, options: str) -> None:  # noqa: F811
    """Killed with -9 after a checkpoint and resumed equals uninterrupted; also with the
    adversarial loss on from step 1 (discriminators in the checkpoint) and yaw-bin batches."""
    long = {**DDP, "max_steps": 120, "eval_every": 60, "preview_every": 60}
    if options == "gan_uniform_yaw":
        long.update(gan_weight=0.1, gan_start=1, uniform_yaw=True)
    ref_root = tiny_project(tmp_path / "ref", tiny_data, long)
    run_root = tiny_project(tmp_path / "run", tiny_data, long)
    if options == "gan_uniform_yaw":
        plant_yaw(ref_root)
        plant_yaw(run_root)
    env = env_for(tmp_path, FACEDAG_GPUS="2")
    victim = stage(run_root, env)
    ckpts = wait_for_checkpoint(victim, run_root)
    # the stage, torchrun and every rank (torchrun starts each in a session of its own), at once
    procs = [psutil.Process(victim.pid), *psutil.Process(victim.pid).children(recursive=True)]
    for proc in procs:
        proc.kill()
    psutil.wait_procs(procs, timeout=30)
    victim.communicate()
    assert not (run_root / "models" / "model.safetensors").exists()  # it died mid-run
    killed_at = max(int(p.stem.split("-")[1]) for p in ckpts.glob("step-*.pt"))
    resumed = stage(run_root, env)
    ref = stage(ref_root, env)
    rc, err = finished(resumed)
    assert rc == 0, err
    assert f"resumed from step {killed_at}" in err
    rc, err = finished(ref)
    assert rc == 0, err
    a, b = model(ref_root), model(run_root)
    assert all(torch.equal(a[k], b[k]) for k in a)
    if options == "gan_uniform_yaw":
        assert "fresh discriminators" not in err
        ref_ckpt = load_checkpoint(list_checkpoints(ref_root / "models" / "checkpoints")[0][1])
        run_ckpt = load_checkpoint(list_checkpoints(run_root / "models" / "checkpoints")[0][1])
        assert ref_ckpt["step"] == run_ckpt["step"] == 120
        assert all(torch.equal(v, run_ckpt["gan"]["nets"][k]) for k, v in ref_ckpt["gan"]["nets"].items())


@pytest.mark.parametrize("target", ["stage", "torchrun"])
def test_sigterm_checkpoints_and_exits(tmp_path: Path, tiny_data: Path, target: str) -> None:  # noqa: F811
    """SIGTERM to the stage (as DVC or Prefect send it: passed on to torchrun) or to torchrun itself:
    every rank finishes its step, rank 0 checkpoints, and all exit within torchrun's 30 s grace."""
    root = tiny_project(tmp_path / "p", tiny_data, {**DDP, "max_steps": 100_000, "checkpoint_every": 50})
    proc = stage(root, env_for(tmp_path, FACEDAG_GPUS="2"))
    ckpts = wait_for_checkpoint(proc, root)
    kids = psutil.Process(proc.pid).children(recursive=True)  # torchrun and its 2 ranks
    assert len(kids) >= 3
    if target == "stage":
        proc.send_signal(signal.SIGTERM)
    else:
        launcher = next(c for c in psutil.Process(proc.pid).children() if "torch.distributed.run" in c.cmdline())
        launcher.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    rc, err = finished(proc, timeout=60)
    assert time.monotonic() - sent < 30  # within torchrun's grace period
    # the stage says 143 when it got the signal; torchrun signalled alone fails the stage (DVC records nothing)
    assert rc == 128 + signal.SIGTERM if target == "stage" else rc != 0, err
    record = json.loads((root / "models" / "model.json").read_text())
    assert record["info"]["stopped"] == "signal" and len(set(record["info"]["weights_sha256"])) == 1
    newest = max(int(p.stem.split("-")[1]) for p in ckpts.glob("step-*.pt"))
    assert newest == record["step"] > 50  # the stop's own checkpoint
    assert not list(ckpts.glob(".*tmp*"))
    assert "got signal 15: checkpointing" in err
    _, alive = psutil.wait_procs(kids, timeout=10)
    assert not alive  # no rank left behind


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_launchers_one_rendezvous_train_one_model(tmp_path: Path, tiny_data: Path) -> None:  # noqa: F811
    """Two torchrun launchers (two "machines", one process each) meet at a c10d rendezvous on
    127.0.0.1 and train the model one launcher with two processes trains."""
    root = tiny_project(tmp_path / "p", tiny_data, DDP)
    ref_root = tiny_project(tmp_path / "ref", tiny_data, DDP)
    env = env_for(tmp_path)
    port = free_port()
    launchers = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d",
         f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=facedag-test", f"--node_rank={i}", "--local_addr=127.0.0.1",
         "-m", "stages.train"], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    ref = stage(ref_root, env_for(tmp_path, FACEDAG_GPUS="2"))
    for proc in launchers:
        rc, err = finished(proc)
        assert rc == 0, err
    rc, err = finished(ref)
    assert rc == 0, err
    info = json.loads((root / "models" / "model.json").read_text())["info"]
    assert info["world_size"] == 2 and len(set(info["weights_sha256"])) == 1
    a, b = model(ref_root), model(root)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_gan_and_uniform_yaw_on_two_ranks_stay_in_step(tmp_path: Path, tiny_data: Path) -> None:  # noqa: F811
    """The adversarial loss (from step 1) and yaw-bin batches under 2 ranks: the discriminators
    are wrapped in DDP like the generator, so every rank ends with the same generator and
    discriminator weights (weights_sha256 covers both with the GAN on)."""
    root = tiny_project(tmp_path / "p", tiny_data, {**DDP, "gan_weight": 0.1, "gan_start": 1, "uniform_yaw": True})
    plant_yaw(root)
    rc, err = finished(stage(root, env_for(tmp_path, FACEDAG_GPUS="2")))
    assert rc == 0, err
    info = json.loads((root / "models" / "model.json").read_text())["info"]
    assert info["world_size"] == 2 and len(set(info["weights_sha256"])) == 1
    assert "over 2 processes" in err and "adversarial loss: weight 0.1" in err and "warning: the" not in err
