"""Training augmentation in torch, on whatever device the batch lives on (the GPU under CUDA, where
the dataset stays resident as uint8 and no batch ever crosses the bus).

Per sample, from one CPU torch.Generator (so a checkpoint that saves the generator's state replays
the exact same augmentations after a resume, and that state is the same 5056 bytes whatever device
trains: a checkpoint written on a GPU resumes on a CPU and back). The few random numbers per
sample are drawn on the CPU, packed into one tensor and copied to the batch's device in one
non-blocking transfer; the image work runs where the batch is.

- affine jitter, applied to the input AND the target (and the loss weights): rotation up to
  +-250*warp degrees (10 at warp 0.04), scale and shift up to +-1.25*warp (5 %), and a horizontal
  flip with probability `flip`. It teaches pose tolerance without teaching the decoder to undo it.
- random warp, applied to the input only: a smooth field (a 5x5 grid of offsets up to +-warp of
  the face side, upsampled bicubically). The model has to rebuild the unwarped face, so it
  learns faces rather than copying pixels (the classic deepfakes/DeepFaceLab trick).
- colour and lighting, applied to input and target alike: a per-channel gain of +-colour_shift,
  a brightness offset of +-light_shift and a left/right light gradient of +-light_shift. Same on
  both, so the decoder learns to keep the input's colour and light, which convert relies on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

WARP_GRID = 5


@dataclass(frozen=True)
class AugmentConfig:
    warp: float = 0.04
    flip: float = 0.5
    colour_shift: float = 0.05
    light_shift: float = 0.08

    @classmethod
    def from_train(cls, train: object) -> AugmentConfig:
        """From a facedag.params.Train section."""
        return cls(float(train.warp), float(train.flip), float(train.colour_shift), float(train.light_shift))


def _uniform(gen: torch.Generator, shape: tuple[int, ...], lo: float, hi: float) -> torch.Tensor:
    return torch.rand(shape, generator=gen) * (hi - lo) + lo


def augment(faces: torch.Tensor, weights: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator,
            rows: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs, targets, per-sample weights) from faces (N, 3, S, S) float in [0, 1].

    `weights` is the loss map, (1, C, S, S) on the template or (N, C, S, S) per face (C maps: the
    loop adds the face region for the learned mask); it is moved with the target face.
    Every random number comes from `gen`, a CPU generator whatever `faces.device` is; the draws
    happen in a fixed order and count, whatever the values, so the generator's state advances
    identically.

    `rows` = (start, total): `faces` are rows start.. of a batch of `total` (one process's share
    under data parallelism). The draws are made for all `total`, and this share's are used, so
    every process's generator advances alike and the batch is augmented as one process would.
    """
    if gen.device.type != "cpu":
        raise ValueError(f"augment draws from a CPU generator (checkpoints travel between devices), got {gen.device}")
    n, _, s, _ = faces.shape
    start, total = rows if rows is not None else (0, n)
    if not 0 <= start <= total - n:
        raise ValueError(f"rows {start}..{start + n} are not within a batch of {total}")
    dev = faces.device
    rot = math.radians(min(10.0, 250.0 * cfg.warp))
    scl = 1.25 * cfg.warp
    shift = 1.25 * cfg.warp * 2.0  # grid units span 2 per side
    m = total
    draws = [
        _uniform(gen, (m,), -rot, rot),  # angle
        1.0 + _uniform(gen, (m,), -scl, scl),  # scale
        _uniform(gen, (m,), -shift, shift),  # tx
        _uniform(gen, (m,), -shift, shift),  # ty
        torch.where(torch.rand((m,), generator=gen) < cfg.flip, -1.0, 1.0),  # flip
        _uniform(gen, (m, 2, WARP_GRID, WARP_GRID), -2.0 * cfg.warp, 2.0 * cfg.warp),  # warp offsets
        1.0 + _uniform(gen, (m, 3, 1, 1), -cfg.colour_shift, cfg.colour_shift),  # gain
        _uniform(gen, (m, 1, 1, 1), -cfg.light_shift, cfg.light_shift),  # brightness
        _uniform(gen, (m, 1, 1, 1), -cfg.light_shift, cfg.light_shift),  # light slope
    ]
    draws = [d[start : start + n] for d in draws]
    packed = torch.cat([d.reshape(n, -1) for d in draws], 1)
    if dev.type == "cuda":  # one pinned, non-blocking copy instead of nine blocking ones
        packed = packed.pin_memory().to(dev, non_blocking=True)
    angle, scale, tx, ty, flip, offsets, gain, bright, slope = (
        t.reshape(d.shape) for t, d in zip(packed.split([d[0].numel() for d in draws], 1), draws, strict=True))

    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([
        torch.stack([cos * flip, -sin, tx], 1),
        torch.stack([sin * flip, cos, ty], 1),
    ], 1).to(faces.dtype)  # fmt: skip
    grid = F.affine_grid(theta, [n, 3, s, s], align_corners=False)
    field = F.interpolate(offsets, size=(s, s), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)

    targets = F.grid_sample(faces, grid, mode="bilinear", padding_mode="border", align_corners=False)
    inputs = F.grid_sample(faces, grid + field.to(faces.dtype), mode="bilinear", padding_mode="border",
                           align_corners=False)
    w = F.grid_sample(weights.expand(n, weights.shape[1], s, s).to(faces.dtype), grid, mode="bilinear",
                      padding_mode="zeros", align_corners=False)

    x = torch.linspace(-1.0, 1.0, s, device=dev, dtype=faces.dtype).view(1, 1, 1, s)
    light = bright + slope * x

    def colour(img: torch.Tensor) -> torch.Tensor:
        return (img * gain + light).clamp_(0.0, 1.0)

    return colour(inputs), colour(targets), w
