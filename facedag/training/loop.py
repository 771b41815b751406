"""The training loop: resumable to the bit, budgeted, and stoppable at any moment.

One step trains every identity: a batch of its faces (sampled without replacement, epoch by
epoch, from its own generator), augmented (facedag.training.augment, from a second generator), through
the shared encoder and the identity's decoder, scored by the masked SSIM + L1 loss
(facedag.training.losses) and the learned mask's loss; `train.occluder_prob` of the faces get a
synthetic occluder over input and target (facedag.training.occluders, drawn from the
augmentation generator), which the RGB loss leaves out and the mask learns to leave out; the
identities' losses are summed and AdamW takes one step. Optional: an adversarial term per
identity with its discriminators' own step (`train.gan_weight`, facedag.training.adversarial),
and batches drawn evenly across yaw bins (`train.uniform_yaw`,
facedag.training.sampler.YawBinSampler). Under CUDA the
forward runs in bf16 autocast where the GPU does bf16 natively (no grad scaler needed), else in
fp16 autocast with a GradScaler (its state in the checkpoint); the loss in fp32; on the CPU
everything is fp32 (facedag.device.pick_precision).

What is scored, saved and converted is a moving average of the weights (`train.ema`, see
WeightAverage), not the last step's raw weights.

Every `train.eval_every` steps (or `train.eval_minutes`, whichever comes first) the model
rebuilds each identity's held-out faces (dedupe's holdout.parquet: whole shots training never
saw, facedag.training.dataset) and is scored by the mean over identities of their masked SSIM
(higher is better). Each new best is written at once to models/best.safetensors + best.json (the
model.json format, with the step, the score and each identity's held-out SSIM, PSNR and L1);
convert uses it. With `train.patience` > 0 training stops early after that many evaluations
without an improvement of more than `train.min_delta`; the checkpoint records the early stop, so
a rerun with the same params does not train on, while raising max_steps (a fresh patience
window) or patience continues. The best score and step and the patience count are in every
checkpoint, so a resumed run never replaces a better best with a worse one.

Stops at `train.max_steps`, after `train.max_minutes` of this run (or the shorter budget in
the environment variable FACEDAG_TRAIN_MINUTES, which a scheduled training session sets),
when patience runs out, or after the step in progress when SIGTERM or SIGINT arrives (a second
signal acts as usual), whichever comes first.
Every stop writes a checkpoint, models/model.safetensors + model.json (the last step's model),
a preview and the dvclive summary. Raising max_steps and rerunning continues the same run.

Checkpoints every `train.checkpoint_every` steps or `train.checkpoint_minutes`, previews every
`train.preview_every` steps or `train.preview_minutes` (Cadence). A checkpoint is copied to the CPU
at its step and written by a background thread (facedag.training.checkpoint.CheckpointWriter),
so the steps go on while about 1 GB of a real-size model's state reaches the disk; the host
waits for the GPU only at evaluations (the losses are read there). Under torchrun the loop
runs in every rank, each on its share of one global batch, rank 0 alone evaluating and
writing (facedag.training.distributed).

Reproducibility: the loop draws randomness only from its own generators (data order,
augmentation) whose states, with the global ones, go into every checkpoint. With
`train.deterministic` (tests) it also uses deterministic kernels and one thread, and then a run
killed and resumed ends with weights equal (torch.equal) to those of an uninterrupted run.

The loop (`train`) reads as the loop: a `Trainer` holds the run's state, and `train` calls its
named pieces in order: `resume`, then `step` until `stop_reason` says why not, with `evaluate`,
`checkpoint` and `preview` on their cadences, then `finish`. The pieces around it live beside
this module: the sampler (facedag.training.sampler), the weight average (average), held-out
scoring and the best model (scoring), signals and session budgets (stopping), curves (live) and
previews (preview).

Outputs under `models_dir`: checkpoints/ (persist), live/ (dvclive, persist: the curves continue
across resumes; rows past the resumed step, left by a kill, are dropped first), previews/
(`step-<n>.png` timelapse + `latest.png`), model.safetensors, model.json, best.safetensors,
best.json.
"""

from __future__ import annotations

import math
import os
import random
import socket
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from facedag.device import autocast_dtype, optimiser_step, pick_device, pick_precision
from facedag.params import Params
from facedag.progress import counter
from facedag.records import StageFailed
from facedag.training.adversarial import build_adversary
from facedag.training.augment import AugmentConfig, augment
from facedag.training.average import WeightAverage
from facedag.training.checkpoint import (
    CheckpointWriter,
    capture_rng,
    checkpoint_path,
    find_resume,
    list_checkpoints,
    load_checkpoint,
    restore_rng,
)
from facedag.training.dataset import dataset_hash, load_dataset
from facedag.training.distributed import join, weights_digest
from facedag.training.live import log_metrics, open_live
from facedag.training.losses import face_region, mask_loss, masked_loss, weight_map
from facedag.training.model import ModelConfig, build_model, save_model
from facedag.training.occluders import build_bank, mask_target, paste
from facedag.training.presets import auto_batch, trial_step
from facedag.training.preview import PREVIEW_FACES, render_preview, write_preview
from facedag.training.sampler import YawBinSampler, make_sampler, restore_sampler
from facedag.training.scoring import (
    BestTracker,
    best_paths,
    evaluate,
    holdout_score,
    read_best,
    resume_early_stop,
    save_best,
)
from facedag.training.sizes import PRESETS, resolve
from facedag.training.stopping import StopSignal, session_budget

# why a run stops; under torchrun every rank takes the highest any rank found (Dist.agree)
STOPS: tuple[str | None, ...] = (None, "max_minutes", "signal", "max_steps", "patience")


class AllIdentities(nn.Module):
    """A training step's forward as one module call (model.forward_all): what DDP wraps, so that
    one forward and one backward per step cover every identity."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, xs: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        return self.model.forward_all(xs)


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


def set_deterministic(seed: int) -> None:
    """Deterministic kernels, one CPU thread, fixed global seeds (for tests and bit-exact resumes)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.set_num_threads(1)
    seed_all(seed)


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def model_config(params: Params) -> ModelConfig:
    size = resolve(params.train)
    return ModelConfig(params.base.face_size, size.encoder_width, size.decoder_width, size.bottleneck,
                       tuple(params.identities), params.train.layout, mask=True)


class Trainer:
    """One training run: the data, the model and everything a checkpoint holds, and the pieces
    the loop calls (see the module docstring). Building it seeds the global generators first
    (the model's initial weights come from them), then loads the data and builds the model."""

    def __init__(self, params: Params, root: Path, models: Path, log: Callable[[str], None]) -> None:
        t = self.t = params.train
        self.models = models
        self.ckpt_dir, self.live_dir, self.previews_dir = models / "checkpoints", models / "live", models / "previews"
        seed = params.base.seed
        self.dist, self.device = join(pick_device(params.device))
        device = self.device
        self.log = log = log if self.dist.main else (lambda _: None)  # rank 0 speaks for the run
        if t.deterministic:
            set_deterministic(seed)
        else:
            seed_all(seed)
        self.identities = identities = list(params.identities)
        self.cfg = cfg = model_config(params)
        self.sets = sets = load_dataset(root, identities, cfg.face_size, device, t.eyes_mouth_weight)
        self.dhash = dataset_hash(root, identities, cfg.face_size)
        for name, fs in sets.items():
            note = f" (no held-out face: {fs.note}; scored on training faces)" if fs.holdout_is_train else ""
            log(f"{name}: {len(fs.train_idx)} training faces, {len(fs.holdout_idx)} held out{note}"
                + (f", {fs.skipped} undecodable skipped" if fs.skipped else ""))
        self.on_train = [name for name, fs in sets.items() if fs.holdout_is_train]

        # channels_last: 1.4x the examples/s of the default layout for the demo model on 2 CPU cores (bench_train)
        self.model = build_model(cfg).to(device, memory_format=torch.channels_last)
        # fused AdamW on a GPU: one kernel for every tensor's update instead of a few per tensor
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=t.lr, weight_decay=t.weight_decay,
                                     fused=device.type == "cuda" or None)
        self.forward: nn.Module = AllIdentities(self.model)  # wrapped in DDP by distribute() under torchrun
        self.precision = pick_precision(device)
        self.amp_dtype = autocast_dtype(self.precision)
        self.batch = self.pick_batch(resolve(t).batch_size, t.preset)  # global: all ranks' shares together
        self.share = self.dist.share(self.batch)
        self.average = WeightAverage(self.model, t.ema)
        self.samplers = {name: make_sampler(sets[name].train_idx, sets[name].yaw, t.uniform_yaw, t.yaw_bins,
                                            seed * 1000 + i) for i, name in enumerate(identities)}
        for name, smp in self.samplers.items():
            if isinstance(smp, YawBinSampler):
                log(f"{name}: training faces per yaw bin {smp.counts} (uniform_yaw: non-empty bins drawn evenly)")
        self.seed = seed
        # a CPU generator whatever the device: its state is the same on every machine (checkpoints travel)
        self.aug_gen = torch.Generator().manual_seed(seed + 7919)
        self.aug_cfg = AugmentConfig.from_train(t)
        self.wmap = weight_map(cfg.face_size, t.eyes_mouth_weight, device)
        self.region = face_region(cfg.face_size, device)
        # occluder textures: the training faces' corners and scikit-image's pictures (facedag.training.occluders)
        self.bank = build_bank({n: fs.images.index_select(0, fs.train_idx.to(fs.images.device)) for n, fs in
                                sets.items()}, cfg.face_size).to(device) if t.occluder_prob > 0 else None
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        # train.gan_weight > 0: a discriminator per identity (facedag.training.adversarial); else None
        self.gan = build_adversary(t, identities, cfg.decoder_width, cfg.face_size, seed, device, self.amp_dtype)
        if self.gan is not None:
            log(f"adversarial loss: weight {t.gan_weight:g} from step {t.gan_start}, "
                f"{self.gan.params_count() / 1e6:.2f} M discriminator params")
        self.tracker = BestTracker(t.patience, t.min_delta)
        self.early_stop: dict[str, Any] | None = None  # set when patience ran out: {step, patience, max_steps}
        self.step_no = 0
        self.resumed_from: int | None = None
        self.evals: dict[str, dict[str, float]] = {}
        self.evaluated_at = -1
        self.writer = CheckpointWriter(self.ckpt_dir, t.keep_checkpoints)
        self.weights_sha256: list[str] = []  # every rank's, at the stop (distributed runs)

    def pick_batch(self, wanted: int | str, preset: str) -> int:
        """train.batch_size as the global batch per identity: a number as set (it must split
        evenly among the ranks), or `auto` (facedag.training.presets.auto_batch; every rank takes
        the smallest share any rank found room for)."""
        world = self.dist.world
        if wanted != "auto":
            if int(wanted) % world:
                raise StageFailed(f"train.batch_size {wanted} does not split evenly among {world} processes: "
                                  "make it a multiple of their number")
            return int(wanted)
        fits = trial_step(self.model, self.cfg, self.device, self.amp_dtype) if self.device.type == "cuda" else None
        share = auto_batch(self.cfg, self.device, PRESETS[preset].batch, world, self.log, fits)
        return -self.dist.agree(-share) * world

    def distribute(self) -> None:
        """Under torchrun: wrap the step's forward in DistributedDataParallel (after resume, which
        loaded the weights; DDP then checks that every rank starts from rank 0's)."""
        if self.dist.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward = DistributedDataParallel(self.forward, device_ids=ids, gradient_as_bucket_view=True)
        if self.gan is not None:
            self.gan.distribute(self.dist.world, self.device)

    # -- resume ----------------------------------------------------------------------------------
    def resume(self) -> None:
        """Continue from the newest usable checkpoint (facedag.training.checkpoint.find_resume), or start fresh."""
        t, log, tracker = self.t, self.log, self.tracker
        state = None
        if self.dist.main:  # finding one may move files aside: rank 0 only, the others load what it chose
            state = find_resume(self.ckpt_dir, self.cfg.to_dict(), self.dhash, log,
                                stale_extra=[self.live_dir, *best_paths(self.models)])
        step = self.dist.broadcast(None if state is None else int(state["step"]))
        if step is not None and state is None:
            path = checkpoint_path(self.ckpt_dir, step)
            if not path.is_file():
                raise StageFailed(f"rank {self.dist.rank} on {socket.gethostname()} has no {path} to resume from: "
                                  "give every machine the same models/checkpoints (a shared folder, or dvc pull)")
            state = load_checkpoint(path)
        if state is None:
            if not list_checkpoints(self.ckpt_dir):
                log("starting fresh: no usable checkpoint")
            return
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        for g in self.opt.param_groups:  # params may change lr/weight decay between runs; the moments carry on
            g["lr"], g["weight_decay"] = t.lr, t.weight_decay
        self.average.load_state_dict(state.get("ema"), self.model, log)
        for i, name in enumerate(self.identities):
            restore_sampler(self.samplers[name], state["samplers"][name], int(state["step"]), self.seed * 1000 + i,
                            log, name)
        if self.gan is not None:
            self.gan.load_state_dict(state.get("gan"), log)
        self.step_no = self.resumed_from = int(state["step"])
        self.restore_augment_rng(state["augment_rng"])
        restore_rng(state["rng"], log)
        written_on = state.get("device", "cpu")
        log(f"resumed from step {self.step_no}" + (f" (checkpoint written on {written_on}, resumed on "
                                                    f"{self.device.type})" if written_on != self.device.type else ""))
        if state.get("best") is not None:
            tracker.load_state_dict(state["best"])
        self.early_stop = resume_early_stop(state.get("early_stop"), tracker, t.max_steps, log)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        on_disk = read_best(self.models, self.cfg, self.dhash)
        if on_disk is None:
            if tracker.step >= 0:
                log(f"warning: {best_paths(self.models)[0]} is missing or from another run (the best was step "
                    f"{tracker.step}): the next evaluation writes a new one")
            tracker.score, tracker.step = -math.inf, -1
        elif on_disk["info"]["score"] > tracker.score:  # written after this checkpoint by a run that was killed
            tracker.score, tracker.step = float(on_disk["info"]["score"]), int(on_disk["step"])

    def restore_augment_rng(self, saved: torch.Tensor) -> None:
        """The augmentation generator's saved state, or (a checkpoint from before augmentation drew on
        the CPU: a 16-byte CUDA generator state) a reseed from the seed and the step, said in the log:
        training goes on, with other augmentations than the run that wrote it would have drawn."""
        if saved.numel() == self.aug_gen.get_state().numel():
            self.aug_gen.set_state(saved.cpu())
            return
        self.aug_gen.manual_seed(self.seed + 7919 + self.step_no)
        self.log(f"the checkpoint's augmentation generator state ({saved.numel()} bytes) is another device's: "
                 f"reseeded augmentation from the seed and step {self.step_no}")

    # -- one step --------------------------------------------------------------------------------
    def step(self) -> dict[str, torch.Tensor]:
        """One optimiser step over every identity's batch; returns each identity's loss (on the
        device: nothing here waits for the GPU). Each rank draws the whole global batch and
        augments it from the same generator, and trains on its share (facedag.training.distributed)."""
        t = self.t
        self.opt.zero_grad(set_to_none=True)
        inputs, targets, weights, regions, covers = [], [], [], [], []
        rows = (self.share.start, self.batch)
        for name in self.identities:
            idx = self.samplers[name].next(self.batch)[self.share]
            faces = self.sets[name]
            n, s = len(idx), self.cfg.face_size
            maps = torch.cat([faces.batch_weights(idx, self.wmap).expand(n, 1, s, s),
                              faces.batch_regions(idx, self.region).expand(n, 1, s, s)], 1)  # warped alike
            inp, tgt, w = augment(faces.batch(idx), maps, self.aug_cfg, self.aug_gen, rows=rows)
            cover = None
            if self.bank is not None:  # occluders over input and target alike, after the shared affine
                inp, tgt, cover = paste(inp, tgt, self.bank, t.occluder_prob, self.aug_gen, rows=rows)
            inputs.append(inp.contiguous(memory_format=torch.channels_last))
            targets.append(tgt)
            weights.append(w[:, :1] if cover is None else w[:, :1] * (1.0 - cover))  # never learn to paint one
            regions.append(w[:, 1:] if cover is None else mask_target(w[:, 1:], cover))
            covers.append(cover)
        ctx = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()
        with ctx:
            outputs = self.forward(inputs)
        losses = {}
        total = torch.zeros((), device=self.device)
        for name, (y, mask), tgt, w, region, cover in zip(self.identities, outputs, targets, weights, regions, covers,
                                                          strict=True):
            loss, _ = masked_loss(y, tgt, w, t.ssim_weight, t.l1_weight)
            if mask is not None:  # also at mask_weight 0: DDP wants a gradient for every parameter
                loss = loss + t.mask_weight * mask_loss(mask, region, cover)
            total = total + loss
            losses[name] = loss.detach()
            if self.gan is not None:  # gan_weight x the adversarial term (0 before gan_start); not in the logged loss
                total = total + self.gan.generator_term(name, y, w, self.step_no)
        optimiser_step(total, self.opt, self.scaler)  # fp16: scaled, overflowing steps skipped
        if self.gan is not None:  # the discriminators' step on this step's targets and detached outputs (RGB),
            # on the face less any occluder (the weights leave it out), as the generator term sees them
            losses.update(self.gan.step([y for y, _ in outputs], targets, weights, self.step_no))
        self.step_no += 1
        self.average.update(self.model, self.step_no)
        return losses

    # -- evaluation ------------------------------------------------------------------------------
    def evaluate(self, scheduled: bool) -> dict[str, dict[str, float]]:
        """Score the weight average on the held-out faces; a new best goes to models/best.safetensors
        at once. Only `scheduled` evaluations (every train.eval_every steps) count for patience, so
        a stop between them changes no decision."""
        self.evals, self.evaluated_at = evaluate(self.average.model, self.sets, self.region), self.step_no
        self.model.train()
        score = holdout_score(self.evals)
        if self.tracker.offer(self.step_no, score, scheduled):
            save_best(self.average.model, self.cfg, self.models, {
                "step": self.step_no, "dataset_hash": self.dhash, "score": score, "metric": "mean held-out SSIM",
                "held_out": self.evals, "holdout_is_train": self.on_train, "ema": self.t.ema,
            })  # fmt: skip
        return self.evals

    def check_patience(self) -> None:
        """Record the early stop when patience ran out (the next checkpoint carries it)."""
        if not self.tracker.exhausted:
            return
        t, tracker = self.t, self.tracker
        self.early_stop = {"step": self.step_no, "patience": t.patience, "max_steps": t.max_steps}
        self.log(f"stopping early at step {self.step_no}: the held-out score has not improved by more than "
                 f"{t.min_delta:g} in {t.patience} evaluations (best {tracker.score:.4f} at step {tracker.step}); "
                 "raise train.patience or train.max_steps to train on")

    # -- checkpointing and previews --------------------------------------------------------------
    def checkpoint(self) -> None:
        """Everything a bit-exact resume needs, copied to the CPU now and written atomically on a
        background thread (facedag.training.checkpoint.CheckpointWriter). Rank 0 only."""
        if not self.dist.main:
            return
        self.writer.submit({
            "step": self.step_no,
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "ema": self.average.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,  # fp16 only: bf16 and fp32 need no scaling
            "gan": self.gan.state_dict() if self.gan is not None else None,  # the discriminators (gan_weight > 0)
            "samplers": {name: s.state_dict() for name, s in self.samplers.items()},
            "augment_rng": self.aug_gen.get_state(),
            "device": self.device.type,
            "rng": capture_rng(),
            "config": self.cfg.to_dict(),
            "dataset_hash": self.dhash,
            "best": self.tracker.state_dict(),
            "early_stop": self.early_stop,
            "world_size": self.dist.world,
        })  # fmt: skip

    def preview(self, faces: dict[str, torch.Tensor]) -> None:
        if not self.dist.main:
            return
        write_preview(self.previews_dir, self.step_no, render_preview(self.average.model, faces, self.identities))
        self.model.train()

    # -- stopping --------------------------------------------------------------------------------
    def stop_reason(self, stopper: StopSignal, started: float, budget_s: float) -> str | None:
        """Why the loop must not take another step, or None: max_steps, patience, signal, max_minutes.
        Decided jointly under torchrun: every rank stops at the same step, for the same reason."""
        mine = 0
        if self.early_stop is not None:
            mine = STOPS.index("patience")
        elif self.step_no >= self.t.max_steps:
            mine = STOPS.index("max_steps")
        elif stopper.signum is not None:
            mine = STOPS.index("signal")
        elif time.monotonic() - started >= budget_s:
            mine = STOPS.index("max_minutes")
        return STOPS[self.dist.agree(mine)]

    def finish(self, stopped: str, start_step: int, started: float, live: Any, metrics: dict[str, float],
               losses: dict[str, float], faces: dict[str, torch.Tensor]) -> dict[str, float]:
        """Every stop: an off-schedule evaluation (it may keep a better best, but counts for no
        patience), a checkpoint unless the newest is this step's with this best, the last curve
        row, a preview and models/model.safetensors + model.json (rank 0: the others only hand in
        the digest of their weights, which model.json records). Returns the last metrics row."""
        if self.dist.world > 1:
            # with the GAN on, the discriminators too: DDP keeps them in step like the generator
            nets = [self.model] if self.gan is None else [self.model, self.gan.nets]
            self.weights_sha256 = self.dist.gather(weights_digest(*nets))
            if len(set(self.weights_sha256)) != 1:
                self.log(f"warning: the {self.dist.world} ranks' weights differ at step {self.step_no}")
        if not self.dist.main:
            return metrics
        best_before = self.tracker.step
        if self.evaluated_at != self.step_no:
            self.evaluate(scheduled=False)
        self.writer.wait()
        newest = list_checkpoints(self.ckpt_dir)
        if not newest or newest[0][0] != self.step_no or self.tracker.step != best_before:
            self.checkpoint()
        # a run resumed at its last step (killed after the final checkpoint) trains nothing: its
        # row is in the curves already, and a second one would read as a 0 steps/s step
        if (not metrics or metrics.get("step") != self.step_no) and self.step_no > start_step:
            sps = (self.step_no - start_step) / max(time.monotonic() - started, 1e-9)
            metrics = log_metrics(live, self.step_no, losses, self.evals, sps, sps * self.batch * len(self.identities))
        self.preview(faces)
        save_model(self.average.model, self.cfg, self.models, {
            "step": self.step_no, "dataset_hash": self.dhash, "stopped": stopped, "resumed_from": self.resumed_from,
            "held_out_ssim": {k: v["ssim"] for k, v in self.evals.items()}, "holdout_is_train": self.on_train,
            "best": {"step": self.tracker.step, "score": self.tracker.score},
            "stopped_early": self.early_stop is not None, "early_stop": self.early_stop, "device": self.device.type,
            "precision": self.precision, "ema": self.t.ema, "batch_size": self.batch, "world_size": self.dist.world,
            "weights_sha256": self.weights_sha256 or None,
        })  # fmt: skip
        self.writer.wait()
        return metrics


class Cadence:
    """Every `steps` steps, or every `minutes` of wall clock (0 = off) since it last fired, whichever
    comes first: step counts suit a CPU demo, minutes a GPU that runs thousands of steps a minute."""

    def __init__(self, steps: int, minutes: float) -> None:
        self.steps, self.seconds, self.last = steps, minutes * 60.0, time.monotonic()

    def due(self, step: int) -> bool:
        now = time.monotonic()
        if step % self.steps == 0 or (self.seconds > 0 and now - self.last >= self.seconds):
            self.last = now
            return True
        return False


def train(params: Params, root: str | os.PathLike[str] = ".", log: Callable[[str], None] = log_line,
          models_dir: str | os.PathLike[str] | None = None) -> TrainResult:
    """Train (or resume training) the model of `params` on `root`/data/dedupe/*/dataset.parquet,
    scoring it on holdout.parquet beside (see the module docstring). Under torchrun every rank
    calls it (facedag.training.distributed)."""
    t = params.train
    root = Path(root)
    run = Trainer(params, root, Path(models_dir) if models_dir is not None else root / "models", log)
    try:
        return _train(run, t)
    finally:
        run.dist.close()


def _train(run: Trainer, t: Any) -> TrainResult:
    log, main = run.log, run.dist.main
    run.resume()
    run.distribute()
    live = open_live(run.live_dir, run.resumed_from) if main else None
    faces = {name: run.sets[name].batch(run.sets[name].holdout_idx[:PREVIEW_FACES]) for name in run.identities}
    budget_min = session_budget(t.max_minutes)
    budget_s = budget_min * 60.0
    started = time.monotonic()
    window_t, window_steps = started, 0
    start_step = run.step_no
    losses: dict[str, float] = {}
    metrics: dict[str, float] = {}
    stopper = StopSignal()
    run.model.train()
    cfg = run.cfg
    every_eval = Cadence(t.eval_every, t.eval_minutes)
    every_ckpt = Cadence(t.checkpoint_every, t.checkpoint_minutes)
    every_preview = Cadence(t.preview_every, t.preview_minutes)
    log(f"training {cfg.face_size}px, preset {t.preset}, {cfg.layout} layout, "
        f"widths {cfg.encoder_width}/{cfg.decoder_width}, bottleneck {cfg.bottleneck}, "
        f"{sum(p.numel() for p in run.model.parameters()) / 1e6:.2f} M params, "
        f"{run.device.type} {run.precision}, batch {run.batch} per identity"
        + (f" over {run.dist.world} processes" if run.dist.world > 1 else "")
        + f", steps {run.step_no} -> {t.max_steps}, budget {budget_min:g} min"
        + (f", weight average {t.ema:g}" if t.ema else "")
        + (f", patience {t.patience} evaluations" if t.patience else ""))
    bar = counter(t.max_steps, initial=run.step_no, desc="train", unit="step") if main else nullcontext()
    with stopper.installed(), bar:
        while (stopped := run.stop_reason(stopper, started, budget_s)) is None:
            step_losses = run.step()
            window_steps += 1
            if main:
                bar.update(1)
            else:
                continue  # the other ranks only train: rank 0 evaluates, checkpoints and previews
            # evaluate before checkpointing, so a checkpoint at this step carries this evaluation's ranking
            if every_eval.due(run.step_no) or run.step_no == t.max_steps:
                losses = {k: float(v) for k, v in step_losses.items()}  # the only wait for the GPU
                now = time.monotonic()
                steps_per_s = window_steps / max(now - window_t, 1e-9)
                window_t, window_steps = now, 0
                evals = run.evaluate(scheduled=True)
                metrics = log_metrics(live, run.step_no, losses, evals, steps_per_s,
                                      steps_per_s * run.batch * len(run.identities))
                log(progress_line(run, t, losses, evals, metrics, steps_per_s, now - started, budget_s, budget_min))
                run.check_patience()
            if every_ckpt.due(run.step_no):
                run.checkpoint()
            if every_preview.due(run.step_no):
                run.preview(faces)
        if stopper.signum is not None:
            stopped = "signal"
            log(f"got signal {stopper.signum}: checkpointing at step {run.step_no} and stopping")
        metrics = run.finish(stopped, start_step, started, live, metrics, losses, faces)
        if live is not None:
            live.end()
    log(f"stopped at step {run.step_no} ({stopped}); wrote {run.models / 'model.safetensors'} and "
        f"{best_paths(run.models)[0]} (step {run.tracker.step}, held-out score {run.tracker.score:.4f})")
    return TrainResult(run.step_no, run.resumed_from, run.step_no - start_step, stopped, stopper.signum, metrics,
                       run.tracker.step, run.tracker.score)


def progress_line(run: Trainer, t: Any, losses: dict[str, float], evals: dict[str, dict[str, float]],
                  metrics: dict[str, float], steps_per_s: float, used: float, budget_s: float,
                  budget_min: float) -> str:
    """The log line of a scheduled evaluation (flows/pipeline.py reads "step N/M | ..." for its
    progress artifact)."""
    left = min(budget_s - used, (t.max_steps - run.step_no) / max(steps_per_s, 1e-9))
    return (f"step {run.step_no}/{t.max_steps} | loss " + " ".join(f"{k} {v:.4f}" for k, v in losses.items())
            + " | held-out SSIM " + " ".join(f"{k} {v['ssim']:.3f}" for k, v in evals.items())
            + f" | best {run.tracker.score:.4f} at step {run.tracker.step}"
            + (f", {run.tracker.waited}/{t.patience} without improvement" if t.patience else "")
            + f" | {metrics['egs_per_s']:.1f} EG/s, {steps_per_s:.2f} steps/s"
            + f" | {max(left, 0) / 60:.1f} min left (budget {budget_min:g} min, {used / 60:.1f} used)")
