"""The training loop: resumable to the bit, budgeted, and stoppable at any moment.

One step trains every identity: a batch of its faces (sampled without replacement, epoch by
epoch, from its own generator), augmented (facedag.augment, from a second generator), through
the shared encoder and the identity's decoder, scored by the masked SSIM + L1 loss
(facedag.losses); the identities' losses are summed and AdamW takes one step. Under CUDA the
forward runs in bf16 autocast (no grad scaler needed with bf16), the loss in fp32; on the CPU
everything is fp32.

What is scored, saved and converted is a moving average of the weights (`train.ema`, see
WeightAverage), not the last step's raw weights.

Every `train.eval_every` steps the model rebuilds each identity's held-out faces (dedupe's
holdout.parquet: whole shots training never saw, facedag.dataset) and is scored by the mean over
identities of their masked SSIM (higher is better). Each new best is written at once to
models/best.safetensors + best.json (the model.json format, with the step, the score and each
identity's held-out SSIM, PSNR and L1); convert uses it. With `train.patience` > 0 training stops
early after that many evaluations without an improvement of more than `train.min_delta`; the
checkpoint records the early stop, so a rerun with the same params does not train on, while
raising max_steps (a fresh patience window) or patience continues. The best score and step and
the patience count are in every checkpoint, so a resumed run never replaces a better best with a
worse one.

Stops at `train.max_steps`, after `train.max_minutes` of this run (or the shorter budget in
the environment variable FACEDAG_TRAIN_MINUTES, which a scheduled training session sets),
when patience runs out, or after the step in progress when SIGTERM or SIGINT arrives (a second
signal acts as usual), whichever comes first.
Every stop writes a checkpoint, models/model.safetensors + model.json (the last step's model),
a preview and the dvclive summary. Raising max_steps and rerunning continues the same run.

Reproducibility: the loop draws randomness only from its own generators (data order,
augmentation) whose states, with the global ones, go into every checkpoint. With
`train.deterministic` (tests) it also uses deterministic kernels and one thread, and then a run
killed and resumed ends with weights equal (torch.equal) to those of an uninterrupted run.

Outputs under `models_dir`: checkpoints/ (persist), live/ (dvclive, persist: the curves continue
across resumes; rows past the resumed step, left by a kill, are dropped first), previews/
(`step-<n>.png` timelapse + `latest.png`), model.safetensors, model.json, best.safetensors,
best.json.
"""

from __future__ import annotations

import copy
import json
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
    stopped: str  # "max_steps" | "max_minutes" | "signal" | "patience" (early stop)
    signal: int | None = None  # the signal that stopped it
    metrics: dict[str, float] = field(default_factory=dict)
    best_step: int = -1  # the step of models/best.safetensors
    best_score: float = float("nan")  # its held-out score (holdout_score)


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


def evaluate(model: FaceSwapModel, sets: dict[str, FaceSet], region: torch.Tensor,
             batch: int = 32) -> dict[str, dict[str, float]]:
    """Each identity's held-out faces rebuilt by its own decoder, over the face region:
    {identity: {"ssim": mean masked SSIM, "psnr": dB of the mean masked squared error,
    "l1": mean masked absolute error}} (images in [0, 1])."""
    out = {}
    model.eval()
    with torch.no_grad():
        for name, fs in sets.items():
            ssim, sq, ab = [], [], []
            for i in range(0, len(fs.holdout_idx), batch):
                x = fs.batch(fs.holdout_idx[i : i + batch])
                y = model(x, name).float()
                w = region.expand(x.shape[0], 1, *x.shape[2:])
                area = w.sum(dim=(1, 2, 3)) * x.shape[1]
                ssim.append(masked_ssim(y, x, region))
                sq.append(((y - x) ** 2 * w).sum(dim=(1, 2, 3)) / area)
                ab.append(((y - x).abs() * w).sum(dim=(1, 2, 3)) / area)
            if not ssim:
                out[name] = {"ssim": float("nan"), "psnr": float("nan"), "l1": float("nan")}
                continue
            mse = float(torch.cat(sq).mean())
            out[name] = {"ssim": float(torch.cat(ssim).mean()),
                         "psnr": 10.0 * math.log10(1.0 / max(mse, 1e-10)),
                         "l1": float(torch.cat(ab).mean())}
    model.train()
    return out


class WeightAverage:
    """An exponential moving average of the model's weights: the model that is scored, saved
    and converted.

    Why: at a constant learning rate the raw weights keep circling the minimum (on the samples
    the held-out SSIM of consecutive evaluations swings by 0.03-0.05); their average sits nearer
    its centre, as a decayed learning rate would, without a schedule that must know when the run
    ends (runs stop on a time budget, and a resumed run goes on). The decay warms up as
    (1 + step) / (10 + step), so that a short run is not averaged with its random start.
    `decay` 0 keeps the raw weights (`model` is then the trained model itself).
    """

    def __init__(self, model: FaceSwapModel, decay: float) -> None:
        self.decay = decay
        self.model = model
        if decay > 0:
            self.model = copy.deepcopy(model)
            self.model.requires_grad_(False)

    def update(self, trained: FaceSwapModel, step: int) -> None:
        """Move the average toward `trained` after its step number `step` (1-based)."""
        if self.model is trained:
            return
        d = min(self.decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for avg, p in zip(self.model.parameters(), trained.parameters(), strict=True):
                avg.lerp_(p, 1.0 - d)

    def state_dict(self) -> dict[str, torch.Tensor] | None:
        if self.decay <= 0:
            return None
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor] | None, trained: FaceSwapModel,
                        log: Callable[[str], None]) -> None:
        """Continue the checkpoint's average; a checkpoint without one (written with ema 0, or
        before it existed) starts it from the trained weights."""
        if self.model is trained:
            return
        if state is None:
            log("the checkpoint has no weight average: starting it from its weights")
            self.model.load_state_dict(trained.state_dict())
        else:
            self.model.load_state_dict(state)


def holdout_score(evals: dict[str, dict[str, float]]) -> float:
    """The one number checkpoints are ranked by: mean over identities of held-out SSIM (higher is better)."""
    return float(np.mean([e["ssim"] for e in evals.values()]))


@dataclass
class BestTracker:
    """Which evaluation scored best (models/best.safetensors holds it) and whether to stop early.

    Two references, as in Keras/Lightning: the best is any strictly higher score, so the best
    model is never thrown away for being only slightly better; patience counts the scheduled
    evaluations since the last improvement by more than `min_delta` (a plateau of tiny gains
    still stops). A non-finite score (a diverged model) never improves anything. The state goes
    into every checkpoint, so a resumed run continues both counts.
    """

    patience: int  # evaluations without improvement before stopping; 0 = never stop early
    min_delta: float
    score: float = -math.inf  # the best score so far
    step: int = -1  # its step (-1: none yet)
    ref: float = -math.inf  # the score of the last improvement by more than min_delta
    waited: int = 0  # scheduled evaluations since then

    def offer(self, step: int, score: float, scheduled: bool = True) -> bool:
        """Record an evaluation; True when it is the new best. Only `scheduled` evaluations (every
        train.eval_every steps) count for patience, so a stop between them changes no decision."""
        finite = math.isfinite(score)
        better = finite and score > self.score
        if better:
            self.score, self.step = score, step
        if scheduled:
            if finite and score > self.ref + self.min_delta:
                self.ref, self.waited = score, 0
            else:
                self.waited += 1
        return better

    @property
    def exhausted(self) -> bool:
        return self.patience > 0 and self.waited >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"score": float(self.score), "step": int(self.step), "ref": float(self.ref),
                "waited": int(self.waited)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.score, self.step = float(state["score"]), int(state["step"])
        self.ref, self.waited = float(state["ref"]), int(state["waited"])


BEST = "best"  # models/best.safetensors + models/best.json


def best_paths(models: Path) -> tuple[Path, Path]:
    return models / f"{BEST}.safetensors", models / f"{BEST}.json"


def read_best(models: Path, cfg: ModelConfig, dhash: str) -> dict[str, Any] | None:
    """models/best.json's record when it and best.safetensors exist and belong to this config and data."""
    weights, record_path = best_paths(models)
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return None
    if not weights.exists() or record.get("config") != cfg.to_dict() or record.get("dataset_hash") != dhash:
        return None
    score = record.get("info", {}).get("score")
    return record if isinstance(score, (int, float)) else None


def save_best(model: FaceSwapModel, cfg: ModelConfig, models: Path, info: dict[str, Any]) -> None:
    """Write models/best.safetensors and best.json (save_model's format, atomic, weights first)."""
    save_model(model, cfg, models, info, name=BEST)


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
    """Train (or resume training) the model of `params` on `root`/data/dedupe/*/dataset.parquet,
    scoring it on holdout.parquet beside (see the module docstring)."""
    t = params.train
    patience = t.patience
    min_delta = t.min_delta
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
    sets = load_dataset(root, identities, cfg.face_size, device)
    dhash = dataset_hash(root, identities, cfg.face_size)
    for name, fs in sets.items():
        note = f" (no held-out face: {fs.note}; scored on training faces)" if fs.holdout_is_train else ""
        log(f"{name}: {len(fs.train_idx)} training faces, {len(fs.holdout_idx)} held out{note}"
            + (f", {fs.skipped} undecodable skipped" if fs.skipped else ""))
    on_train = [name for name, fs in sets.items() if fs.holdout_is_train]

    # channels_last: 1.4x the examples/s of the default layout for the demo model on 2 CPU cores (bench_train)
    model = FaceSwapModel(cfg).to(device, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    average = WeightAverage(model, t.ema)
    samplers = {name: Sampler(sets[name].train_idx, seed * 1000 + i) for i, name in enumerate(identities)}
    aug_gen = torch.Generator(device=device).manual_seed(seed + 7919)
    aug_cfg = AugmentConfig.from_train(t)
    wmap = weight_map(cfg.face_size, t.eyes_mouth_weight, device)
    region = face_region(cfg.face_size, device)
    use_bf16 = device.type == "cuda"
    tracker = BestTracker(patience, min_delta)
    early_stop: dict[str, Any] | None = None  # set when patience ran out: {step, patience, max_steps}

    state = find_resume(ckpt_dir, cfg.to_dict(), dhash, log, stale_extra=[live_dir, *best_paths(models)])
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        for g in opt.param_groups:  # params may change lr/weight decay between runs; the moments carry on
            g["lr"], g["weight_decay"] = t.lr, t.weight_decay
        average.load_state_dict(state.get("ema"), model, log)
        for name in identities:
            samplers[name].load_state_dict(state["samplers"][name])
        aug_gen.set_state(state["augment_rng"].to(aug_gen.get_state().device))
        restore_rng(state["rng"])
        step = int(state["step"])
        resumed_from: int | None = step
        log(f"resumed from step {step}")
        if state.get("best") is not None:
            tracker.load_state_dict(state["best"])
        early_stop = _resume_early_stop(state.get("early_stop"), tracker, t.max_steps, log)
        on_disk = read_best(models, cfg, dhash)
        if on_disk is None:
            if tracker.step >= 0:
                log(f"warning: {best_paths(models)[0]} is missing or from another run (the best was step "
                    f"{tracker.step}): the next evaluation writes a new one")
            tracker.score, tracker.step = -math.inf, -1
        elif on_disk["info"]["score"] > tracker.score:  # written after this checkpoint by a run that was killed
            tracker.score, tracker.step = float(on_disk["info"]["score"]), int(on_disk["step"])
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
            "ema": average.state_dict(),
            "scaler": None,  # bf16 autocast needs no loss scaling; the slot stays for an fp16 variant
            "samplers": {name: s.state_dict() for name, s in samplers.items()},
            "augment_rng": aug_gen.get_state().cpu(),
            "rng": capture_rng(),
            "config": cfg.to_dict(),
            "dataset_hash": dhash,
            "best": tracker.state_dict(),
            "early_stop": early_stop,
        }, t.keep_checkpoints)  # fmt: skip

    def offer(evals: dict[str, dict[str, float]], scheduled: bool) -> None:
        """Rank this evaluation; a new best goes to models/best.safetensors at once."""
        score = holdout_score(evals)
        if tracker.offer(step, score, scheduled):
            save_best(average.model, cfg, models, {
                "step": step, "dataset_hash": dhash, "score": score, "metric": "mean held-out SSIM",
                "held_out": evals, "holdout_is_train": on_train, "ema": t.ema,
            })  # fmt: skip

    budget_min = session_budget(t.max_minutes)
    budget_s = budget_min * 60.0
    start = time.monotonic()
    window_t, window_steps = start, 0
    start_step = step
    last_losses: dict[str, float] = {}
    metrics: dict[str, float] = {}
    evals: dict[str, dict[str, float]] = {}
    evaluated_at = -1
    stopper = StopSignal()
    stopped = "max_steps" if early_stop is None else "patience"
    model.train()
    log(f"training {cfg.face_size}px, widths {cfg.encoder_width}/{cfg.decoder_width}, bottleneck {cfg.bottleneck}, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params, {device.type}"
        f"{' bf16' if use_bf16 else ' fp32'}, steps {step} -> {t.max_steps}, budget {budget_min:g} min"
        + (f", weight average {t.ema:g}" if t.ema else "") + (f", patience {patience} evaluations" if patience else ""))
    bar = counter(t.max_steps, initial=step, desc="train", unit="step")
    with stopper.installed(), bar:
        while step < t.max_steps and early_stop is None:
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
            average.update(model, step)
            window_steps += 1
            bar.update(1)
            # evaluate before checkpointing, so a checkpoint at this step carries this evaluation's ranking
            if step % t.eval_every == 0 or step == t.max_steps:
                last_losses = {k: float(v) for k, v in step_losses.items()}
                now = time.monotonic()
                steps_per_s = window_steps / max(now - window_t, 1e-9)
                window_t, window_steps = now, 0
                evals, evaluated_at = evaluate(average.model, sets, region), step
                offer(evals, scheduled=True)
                metrics = _log_metrics(live, step, last_losses, evals, steps_per_s, steps_per_s * t.batch_size
                                       * len(identities))
                used = now - start
                left = min(budget_s - used, (t.max_steps - step) / max(steps_per_s, 1e-9))
                log(f"step {step}/{t.max_steps} | loss " + " ".join(f"{k} {v:.4f}" for k, v in last_losses.items())
                    + " | held-out SSIM " + " ".join(f"{k} {v['ssim']:.3f}" for k, v in evals.items())
                    + f" | best {tracker.score:.4f} at step {tracker.step}"
                    + (f", {tracker.waited}/{patience} without improvement" if patience else "")
                    + f" | {metrics['egs_per_s']:.1f} EG/s, {steps_per_s:.2f} steps/s"
                    + f" | {max(left, 0) / 60:.1f} min left (budget {budget_min:g} min, {used / 60:.1f} used)")
                if tracker.exhausted:
                    early_stop = {"step": step, "patience": patience, "max_steps": t.max_steps}
                    stopped = "patience"
                    log(f"stopping early at step {step}: the held-out score has not improved by more than "
                        f"{min_delta:g} in {patience} evaluations (best {tracker.score:.4f} at step {tracker.step}); "
                        "raise train.patience or train.max_steps to train on")
            if step % t.checkpoint_every == 0:
                checkpoint()
            if step % t.preview_every == 0:
                write_preview(previews_dir, step, render_preview(average.model, preview_faces, identities))
                model.train()

        if stopped == "signal" or stopper.signum is not None:
            stopped = "signal"
            log(f"got signal {stopper.signum}: checkpointing at step {step} and stopping")
        best_before = tracker.step
        if evaluated_at != step:  # off schedule: may keep a better best, but counts for no patience
            evals = evaluate(average.model, sets, region)
            offer(evals, scheduled=False)
        if not list_checkpoints(ckpt_dir) or list_checkpoints(ckpt_dir)[0][0] != step or tracker.step != best_before:
            checkpoint()
        # a run resumed at its last step (killed after the final checkpoint) trains nothing: its
        # row is in the curves already, and a second one would read as a 0 steps/s step
        if (not metrics or metrics.get("step") != step) and step > start_step:
            elapsed = max(time.monotonic() - start, 1e-9)
            sps = (step - start_step) / elapsed
            metrics = _log_metrics(live, step, last_losses, evals, sps, sps * t.batch_size * len(identities))
        write_preview(previews_dir, step, render_preview(average.model, preview_faces, identities))
        save_model(average.model, cfg, models, {
            "step": step, "dataset_hash": dhash, "stopped": stopped, "resumed_from": resumed_from,
            "held_out_ssim": {k: v["ssim"] for k, v in evals.items()}, "holdout_is_train": on_train,
            "best": {"step": tracker.step, "score": tracker.score}, "stopped_early": early_stop is not None,
            "early_stop": early_stop, "device": device.type, "precision": "bf16" if use_bf16 else "fp32", "ema": t.ema,
        })  # fmt: skip
        live.end()
    log(f"stopped at step {step} ({stopped}); wrote {models / 'model.safetensors'} and {best_paths(models)[0]} "
        f"(step {tracker.step}, held-out score {tracker.score:.4f})")
    return TrainResult(step, resumed_from, step - start_step, stopped, stopper.signum, metrics,
                       tracker.step, tracker.score)


def _resume_early_stop(record: dict[str, Any] | None, tracker: BestTracker, max_steps: int,
                       log: Callable[[str], None]) -> dict[str, Any] | None:
    """Whether an early stop recorded in the checkpoint still holds under the current params.

    It holds (the run does not train on) unless train.max_steps was raised, which gives a fresh
    patience window, or train.patience was raised or set to 0, which continues the count.
    """
    if record is None:
        return None
    raised_steps = max_steps > int(record["max_steps"])
    raised_patience = tracker.patience == 0 or tracker.patience > int(record["patience"])
    if not (raised_steps or raised_patience):
        log(f"not training on: stopped early at step {record['step']} (no improvement in {record['patience']} "
            "evaluations); raise train.patience or train.max_steps to continue")
        return record
    if tracker.exhausted:
        tracker.waited = 0
    log(f"continuing after the early stop at step {record['step']}: train."
        + ("max_steps" if raised_steps else "patience") + " was raised")
    return None


def _log_metrics(live: Any, step: int, losses: dict[str, float], evals: dict[str, dict[str, float]],
                 steps_per_s: float, egs_per_s: float) -> dict[str, float]:
    live.step = step
    out: dict[str, float] = {"step": step}
    for name, v in losses.items():
        live.log_metric(f"loss/{name}", round(v, 6))
        out[f"loss/{name}"] = v
    for name, e in evals.items():
        for key in ("ssim", "psnr"):
            if math.isfinite(e[key]):
                live.log_metric(f"{key}_holdout/{name}", round(e[key], 6))
            out[f"{key}_holdout/{name}"] = e[key]
    score = holdout_score(evals) if evals else float("nan")
    if math.isfinite(score):
        live.log_metric("score_holdout", round(score, 6))
    out["score_holdout"] = score
    live.log_metric("steps_per_s", round(steps_per_s, 4))
    live.log_metric("egs_per_s", round(egs_per_s, 3))
    out["steps_per_s"], out["egs_per_s"] = steps_per_s, egs_per_s
    live.make_summary()
    return out
