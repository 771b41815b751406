"""Scoring on the held-out faces, and which evaluation was best (models/best.safetensors) and
whether to stop early: the numbers checkpoints are ranked by."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facedag.training.dataset import FaceSet
from facedag.training.losses import masked_ssim
from facedag.training.model import FaceSwapModel, ModelConfig, save_model


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



def resume_early_stop(record: dict[str, Any] | None, tracker: BestTracker, max_steps: int,
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


