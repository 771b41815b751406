"""The training loop: resumable to the bit, budgeted, and stoppable at any moment.

One step trains every identity: a batch of its faces (sampled without replacement, epoch by
epoch, from its own generator), augmented (facedag.augment, from a second generator), through
the shared encoder and the identity's decoder, scored by the masked SSIM + L1 loss
(facedag.losses); the identities' losses are summed and AdamW takes one step. Under CUDA the
forward runs in bf16 autocast (no grad scaler needed with bf16), the loss in fp32; on the CPU
everything is fp32.

Stops at `train.max_steps` or after `train.max_minutes` of this run (or the shorter budget in
the environment variable FACEDAG_TRAIN_MINUTES, which a scheduled training session sets),
whichever comes first, or after the step in progress when SIGTERM or SIGINT arrives (a second
signal acts as usual).
Every stop writes a checkpoint, models/model.safetensors + model.json, a preview and the
dvclive summary. Raising max_steps and rerunning continues the same run.

Reproducibility: the loop draws randomness only from its own generators (data order,
augmentation) whose states, with the global ones, go into every checkpoint. With
`train.deterministic` (tests) it also uses deterministic kernels and one thread, and then a run
killed and resumed ends with weights equal (torch.equal) to those of an uninterrupted run.

Outputs under `models_dir`: checkpoints/ (persist), live/ (dvclive, persist: the curves continue
across resumes; rows past the resumed step, left by a kill, are dropped first), previews/
(`step-<n>.png` timelapse + `latest.png`), model.safetensors, model.json.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from facedag.augment import AugmentConfig, augment
from facedag.checkpoint import capture_rng, find_resume, list_checkpoints, restore_rng, save_checkpoint
from facedag.dataset import FaceSet, dataset_hash, load_dataset
from facedag.losses import face_region, masked_loss, masked_ssim, weight_map
from facedag.model import FaceSwapModel, ModelConfig, save_model
from facedag.params import Params
from facedag.progress import counter
from facedag.records import StageFailed, atomic_write_bytes

PREVIEW_FACES = 4


def log_line(msg: str) -> None:
    print(f"train: {msg}", file=sys.stderr, flush=True)


@dataclass
class TrainResult:
    step: int  # the step the outputs are at
    resumed_from: int | None  # the checkpoint step this run started from; None when fresh
    steps_run: int  # steps taken by this run
    stopped: str  # "max_steps" | "max_minutes" | "signal"
    signal: int | None = None  # the signal that stopped it
    metrics: dict[str, float] = field(default_factory=dict)


def pick_device(device: str) -> torch.device:
    """base.device: auto takes CUDA when there is one."""
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def set_deterministic(seed: int) -> None:
    """Deterministic kernels, one CPU thread, fixed global seeds (for tests and bit-exact resumes)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.set_num_threads(1)
    seed_all(seed)


def seed_all(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class Sampler:
    """Batches of training indices: a fresh permutation per epoch from its own generator.

    Its whole state (generator, current permutation, position) goes into the checkpoint, so a
    resumed run draws exactly the faces the uninterrupted run would have.
    """

    def __init__(self, indices: torch.Tensor, seed: int) -> None:
        self.indices = indices.cpu()
        self.gen = torch.Generator().manual_seed(int(seed))
        self.perm = torch.randperm(len(self.indices), generator=self.gen)
        self.pos = 0

    def next(self, n: int) -> torch.Tensor:
        out = []
        while n > 0:
            if self.pos >= len(self.perm):
                self.perm = torch.randperm(len(self.indices), generator=self.gen)
                self.pos = 0
            take = min(n, len(self.perm) - self.pos)
            out.append(self.perm[self.pos : self.pos + take])
            self.pos += take
            n -= take
        return self.indices[torch.cat(out)]

    def state_dict(self) -> dict[str, Any]:
        return {"gen": self.gen.get_state(), "perm": self.perm.clone(), "pos": int(self.pos)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["gen"])
        self.perm = state["perm"].clone()
        self.pos = int(state["pos"])


class StopSignal:
    """Turns the first SIGTERM/SIGINT into a flag the loop checks between steps; a second one
    gets the default action (SIGINT: KeyboardInterrupt; SIGTERM: terminate)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def _handler(self, signum: int, _frame: Any) -> None:
        self.signum = signum
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)

    @contextmanager
    def installed(self) -> Iterator[StopSignal]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        old = {s: signal.signal(s, self._handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


# -- dvclive -------------------------------------------------------------------------------------
def _truncate_live(live_dir: Path, step: int) -> None:
    """Drop rows past `step` from dvclive's metric histories (left by a run killed after its last
    checkpoint), so the resumed run's rows continue the curves without going back in time."""
    for tsv in (live_dir / "plots" / "metrics").rglob("*.tsv"):
        lines = tsv.read_text().splitlines()
        if not lines:
            continue
        header = lines[0].split("\t")
        if "step" not in header:
            continue
        col = header.index("step")
        kept = [ln for ln in lines[1:] if ln.split("\t")[col].isdigit() and int(ln.split("\t")[col]) <= step]
        if len(kept) != len(lines) - 1:
            atomic_write_bytes(tsv, ("\n".join([lines[0], *kept]) + "\n").encode())


def open_live(live_dir: Path, resume_step: int | None) -> Any:
    """A dvclive Live in `live_dir`: resumed (curves continue) or fresh. Writes no dvc.yaml and
    saves no experiment: the train stage's outs and metrics are declared in dvc.yaml by hand."""
    from dvclive import Live

    class FileLive(Live):
        """Live without its DVC experiment bookkeeping, which facedag does not use (the stage's
        outs are in dvc.yaml) and which crashes in a git repo with no commit yet (dvclive 3.49
        asks git for HEAD outside its own error handling)."""

        def _init_dvc(self) -> None:
            return None

    if resume_step is not None and live_dir.exists():
        _truncate_live(live_dir, resume_step)
    return FileLive(dir=str(live_dir), resume=resume_step is not None, report=None, save_dvc_exp=False,
                    dvcyaml=False)


# -- previews ------------------------------------------------------------------------------------
def preview_rows(identities: list[str]) -> list[tuple[str, str]]:
    """(from, to) rows: each identity to itself, then every other identity to the first (src)."""
    rows = [(name, name) for name in identities]
    rows += [(name, identities[0]) for name in identities[1:]]
    return rows


def render_preview(model: FaceSwapModel, faces: dict[str, torch.Tensor], identities: list[str]) -> np.ndarray:
    """RGB uint8 grid: one row per (from, to), columns (input, output) pairs, a label strip on the left."""
    s = model.cfg.face_size
    gap = 2
    rows = []
    with torch.no_grad():
        for src, dst in preview_rows(identities):
            x = faces[src]
            y = model(x, dst).float()
            cells = [torch.cat([a, b], dim=2) for a, b in zip(x, y, strict=True)]  # (3, S, 2S) pairs
            row = (torch.cat(cells, dim=2).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
            label = np.full((s, max(s, 64), 3), 32, np.uint8)
            scale = max(0.3, s / 128 * 0.5)
            cv2.putText(label, f"{src}>", (4, s // 2 - 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1)
            cv2.putText(label, dst, (4, s // 2 + int(14 * scale / 0.5)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                        (255, 255, 255), 1)
            rows.append(np.concatenate([label, row], axis=1))
    width = max(r.shape[1] for r in rows)
    out = np.full((len(rows) * (s + gap) - gap, width, 3), 0, np.uint8)
    for i, r in enumerate(rows):
        out[i * (s + gap) : i * (s + gap) + s, : r.shape[1]] = r
    return out


def write_preview(previews_dir: Path, step: int, grid: np.ndarray) -> Path:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    path = previews_dir / f"step-{step:09d}.png"
    atomic_write_bytes(path, buf.tobytes())
    atomic_write_bytes(previews_dir / "latest.png", buf.tobytes())
    return path


# -- the loop ------------------------------------------------------------------------------------
def model_config(params: Params) -> ModelConfig:
    t = params.train
    return ModelConfig(params.base.face_size, t.encoder_width, t.decoder_width, t.bottleneck,
                       tuple(params.identities))


def evaluate(model: FaceSwapModel, sets: dict[str, FaceSet], region: torch.Tensor, batch: int = 32) -> dict[str, float]:
    """Mean masked SSIM of each identity's held-out faces rebuilt by its own decoder."""
    out = {}
    model.eval()
    with torch.no_grad():
        for name, fs in sets.items():
            vals = []
            for i in range(0, len(fs.holdout_idx), batch):
                x = fs.batch(fs.holdout_idx[i : i + batch])
                vals.append(masked_ssim(model(x, name), x, region))
            out[name] = float(torch.cat(vals).mean()) if vals else float("nan")
    model.train()
    return out


SESSION_ENV = "FACEDAG_TRAIN_MINUTES"


def session_budget(max_minutes: float) -> float:
    """This run's budget in minutes: train.max_minutes, or a scheduled session's shorter one.

    The train-session deployment (flows/train_session.py) sets it from train.session_minutes,
    so each scheduled run trains for one session, checkpoints and exits, and the next resumes.
    """
    raw = os.environ.get(SESSION_ENV)
    if not raw:
        return max_minutes
    try:
        session = float(raw)
    except ValueError:
        raise StageFailed(f"{SESSION_ENV}={raw!r} is not a number of minutes") from None
    if not session > 0:
        raise StageFailed(f"{SESSION_ENV}={raw!r} must be more than 0 minutes")
    return min(max_minutes, session)


def train(params: Params, root: str | os.PathLike[str] = ".", log: Callable[[str], None] = log_line,
          models_dir: str | os.PathLike[str] | None = None) -> TrainResult:
    """Train (or resume training) the model of `params` on `root`/data/dedupe/*/dataset.parquet."""
    t = params.train
    root = Path(root)
    models = Path(models_dir) if models_dir is not None else root / "models"
    ckpt_dir, live_dir, previews_dir = models / "checkpoints", models / "live", models / "previews"
    seed = params.base.seed
    device = pick_device(params.base.device)
    if t.deterministic:
        set_deterministic(seed)
    else:
        seed_all(seed)
    identities = list(params.identities)
    cfg = model_config(params)
    sets = load_dataset(root, identities, cfg.face_size, t.holdout, seed, device)
    dhash = dataset_hash(root, identities, cfg.face_size, t.holdout, seed)
    for name, fs in sets.items():
        note = " (no second track: evaluated on training faces)" if fs.holdout_is_train else ""
        log(f"{name}: {len(fs.train_idx)} training faces, {len(fs.holdout_idx)} held out{note}"
            + (f", {fs.skipped} undecodable skipped" if fs.skipped else ""))

    # channels_last: 1.4x the examples/s of the default layout for the demo model on 2 CPU cores (bench_train)
    model = FaceSwapModel(cfg).to(device, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    samplers = {name: Sampler(sets[name].train_idx, seed * 1000 + i) for i, name in enumerate(identities)}
    aug_gen = torch.Generator(device=device).manual_seed(seed + 7919)
    aug_cfg = AugmentConfig.from_train(t)
    wmap = weight_map(cfg.face_size, t.eyes_mouth_weight, device)
    region = face_region(cfg.face_size, device)
    use_bf16 = device.type == "cuda"

    state = find_resume(ckpt_dir, cfg.to_dict(), dhash, log, stale_extra=[live_dir])
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        for g in opt.param_groups:  # params may change lr/weight decay between runs; the moments carry on
            g["lr"], g["weight_decay"] = t.lr, t.weight_decay
        for name in identities:
            samplers[name].load_state_dict(state["samplers"][name])
        aug_gen.set_state(state["augment_rng"].to(aug_gen.get_state().device))
        restore_rng(state["rng"])
        step = int(state["step"])
        resumed_from: int | None = step
        log(f"resumed from step {step}")
    else:
        step, resumed_from = 0, None
        if not list_checkpoints(ckpt_dir):
            log("starting fresh: no usable checkpoint")
    live = open_live(live_dir, resumed_from)
    preview_faces = {name: sets[name].batch(sets[name].holdout_idx[:PREVIEW_FACES]) for name in identities}

    def checkpoint() -> None:
        save_checkpoint(ckpt_dir, {
            "step": step,
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": opt.state_dict(),
            "scaler": None,  # bf16 autocast needs no loss scaling; the slot stays for an fp16 variant
            "samplers": {name: s.state_dict() for name, s in samplers.items()},
            "augment_rng": aug_gen.get_state().cpu(),
            "rng": capture_rng(),
            "config": cfg.to_dict(),
            "dataset_hash": dhash,
        }, t.keep_checkpoints)  # fmt: skip

    budget_min = session_budget(t.max_minutes)
    budget_s = budget_min * 60.0
    start = time.monotonic()
    window_t, window_steps = start, 0
    start_step = step
    last_losses: dict[str, float] = {}
    metrics: dict[str, float] = {}
    stopper = StopSignal()
    stopped = "max_steps"
    model.train()
    log(f"training {cfg.face_size}px, widths {cfg.encoder_width}/{cfg.decoder_width}, bottleneck {cfg.bottleneck}, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params, {device.type}"
        f"{' bf16' if use_bf16 else ' fp32'}, steps {step} -> {t.max_steps}, budget {budget_min:g} min")
    bar = counter(t.max_steps, initial=step, desc="train", unit="step")
    with stopper.installed(), bar:
        while step < t.max_steps:
            if stopper.signum is not None:
                stopped = "signal"
                break
            if time.monotonic() - start >= budget_s:
                stopped = "max_minutes"
                break
            opt.zero_grad(set_to_none=True)
            total = torch.zeros((), device=device)
            step_losses = {}
            for name in identities:
                x = sets[name].batch(samplers[name].next(t.batch_size))
                inp, tgt, w = augment(x, wmap, aug_cfg, aug_gen)
                inp = inp.contiguous(memory_format=torch.channels_last)
                ctx = torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else nullcontext()
                with ctx:
                    y = model(inp, name)
                loss, _ = masked_loss(y, tgt, w, t.ssim_weight, t.l1_weight)
                total = total + loss
                step_losses[name] = loss.detach()
            total.backward()
            opt.step()
            step += 1
            window_steps += 1
            bar.update(1)
            if step % t.checkpoint_every == 0:
                checkpoint()
            if step % t.eval_every == 0 or step == t.max_steps:
                last_losses = {k: float(v) for k, v in step_losses.items()}
                now = time.monotonic()
                steps_per_s = window_steps / max(now - window_t, 1e-9)
                window_t, window_steps = now, 0
                ssim = evaluate(model, sets, region)
                metrics = _log_metrics(live, step, last_losses, ssim, steps_per_s, steps_per_s * t.batch_size
                                       * len(identities))
                used = now - start
                left = min(budget_s - used, (t.max_steps - step) / max(steps_per_s, 1e-9))
                log(f"step {step}/{t.max_steps} | loss " + " ".join(f"{k} {v:.4f}" for k, v in last_losses.items())
                    + " | held-out SSIM " + " ".join(f"{k} {v:.3f}" for k, v in ssim.items())
                    + f" | {metrics['egs_per_s']:.1f} EG/s, {steps_per_s:.2f} steps/s"
                    + f" | {max(left, 0) / 60:.1f} min left (budget {budget_min:g} min, {used / 60:.1f} used)")
            if step % t.preview_every == 0:
                write_preview(previews_dir, step, render_preview(model, preview_faces, identities))
                model.train()

        if stopped == "signal" or stopper.signum is not None:
            stopped = "signal"
            log(f"got signal {stopper.signum}: checkpointing at step {step} and stopping")
        if not list_checkpoints(ckpt_dir) or list_checkpoints(ckpt_dir)[0][0] != step:
            checkpoint()
        ssim = evaluate(model, sets, region)
        if not metrics or metrics.get("step") != step:
            elapsed = max(time.monotonic() - start, 1e-9)
            sps = (step - start_step) / elapsed
            metrics = _log_metrics(live, step, last_losses, ssim, sps, sps * t.batch_size * len(identities))
        write_preview(previews_dir, step, render_preview(model, preview_faces, identities))
        save_model(model, cfg, models, {
            "step": step, "dataset_hash": dhash, "stopped": stopped, "resumed_from": resumed_from,
            "held_out_ssim": ssim, "device": device.type, "precision": "bf16" if use_bf16 else "fp32",
        })  # fmt: skip
        live.end()
    log(f"stopped at step {step} ({stopped}); wrote {models / 'model.safetensors'}")
    return TrainResult(step, resumed_from, step - start_step, stopped, stopper.signum, metrics)


def _log_metrics(live: Any, step: int, losses: dict[str, float], ssim: dict[str, float], steps_per_s: float,
                 egs_per_s: float) -> dict[str, float]:
    live.step = step
    out: dict[str, float] = {"step": step}
    for name, v in losses.items():
        live.log_metric(f"loss/{name}", round(v, 6))
        out[f"loss/{name}"] = v
    for name, v in ssim.items():
        if math.isfinite(v):
            live.log_metric(f"ssim_holdout/{name}", round(v, 6))
        out[f"ssim_holdout/{name}"] = v
    live.log_metric("steps_per_s", round(steps_per_s, 4))
    live.log_metric("egs_per_s", round(egs_per_s, 3))
    out["steps_per_s"], out["egs_per_s"] = steps_per_s, egs_per_s
    live.make_summary()
    return out


