"""Model size presets (`train.preset`) and `train.batch_size: auto`.

A preset is a row of one small table keyed by name: the widths and bottleneck, the face size
it is meant for, its default batch, and the GPU memory training needs at that batch. Layout-
independent on purpose: a layout (facedag.training.layouts) builds its network from the same
widths, so adding a layout adds no row here; the memory column is the `df` layout's.

The memory column is an estimate, not a GPU measurement (no GPU has run this code yet): 20 bytes
per parameter (fp32 weights, gradients, AdamW's two moments, the weight average), the tensors
the forward saves for the backward at bf16 (traced on torch's meta device, both identities),
both identities' 2000 training faces resident as uint8, and 1 GiB for the CUDA context and
cuDNN workspace. `python -m facedag.training.presets` prints it; benchmarks/gpu_check.py
measures the real peak where a GPU is.

`batch_size: auto` picks the largest batch that fits the GPU it finds: the estimate above
against the free memory, then one real trial step at that batch (halved on out-of-memory), and
says which; on the CPU it takes the preset's default batch (there is no device memory to fill,
and a larger batch only makes each step slower) and says so.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from facedag.training.model import ModelConfig, build_model
from facedag.training.sizes import PRESETS

GIB = 1 << 30
PARAM_BYTES = 20  # fp32 weights + gradients + AdamW exp_avg + exp_avg_sq + the weight average
CONTEXT_BYTES = 1 * GIB  # CUDA context, cuDNN workspace, allocator slack
RESIDENT_FACES = 2000  # dedupe.max_faces per identity, kept on the GPU as uint8
MAX_BATCH = 1024


def activation_bytes(cfg: ModelConfig, batch: int, dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes the forward of a training step (every identity at `batch`) saves for its backward,
    traced on the meta device: no memory is allocated and no arithmetic is done."""
    with torch.device("meta"):
        model = build_model(cfg).to(dtype)
        xs = [torch.empty(batch, 3, cfg.face_size, cfg.face_size, dtype=dtype) for _ in cfg.identities]
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.forward_all([x.requires_grad_() for x in xs], together=True)  # as it runs on a GPU
    return saved


def estimate_bytes(cfg: ModelConfig, batch: int) -> int:
    """The GPU memory estimate of the module docstring, for `cfg` at `batch` faces per identity."""
    params = sum(p.numel() for p in build_model(cfg).parameters())
    faces = RESIDENT_FACES * len(cfg.identities) * 3 * cfg.face_size**2
    return PARAM_BYTES * params + activation_bytes(cfg, batch) + faces + CONTEXT_BYTES


def largest_fitting(cfg: ModelConfig, free_bytes: int, world: int = 1) -> int:
    """The largest batch per identity (a multiple of 8 from 8 up, and of `world`) whose estimate
    fits in 85 % of `free_bytes` with the model, its state and the faces already counted; at least 1."""
    fixed = estimate_bytes(cfg, 1) - activation_bytes(cfg, 1)
    per_face = max(1, activation_bytes(cfg, 2) - activation_bytes(cfg, 1))
    b = int((0.85 * free_bytes - fixed) // per_face)
    b = max(1, min(MAX_BATCH, b))
    if b >= 8:
        b -= b % 8
    if b >= world:
        b -= b % world
    return max(b, 1)


def trial_step(model: torch.nn.Module, cfg: ModelConfig, device: torch.device, dtype: torch.dtype | None,
               ) -> Callable[[int], bool]:
    """fits(batch): whether one forward and backward of a copy of `model` at `batch` per identity
    runs on `device` without running out of memory (the training run's model and generators are
    not touched)."""

    def fits(batch: int) -> bool:
        probe = copy.deepcopy(model)
        try:
            xs = [torch.rand(batch, 3, cfg.face_size, cfg.face_size, device=device) for _ in cfg.identities]
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                ys = probe.forward_all(xs)
            sum(y.float().mean() + (0 if m is None else m.float().mean()) for y, m in ys).backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return True
        except torch.OutOfMemoryError:
            return False
        finally:
            del probe
            if device.type == "cuda":
                torch.cuda.empty_cache()

    return fits


def auto_batch(cfg: ModelConfig, device: torch.device, default: int, world: int, log: Callable[[str], None],
               fits: Callable[[int], bool] | None = None, free_bytes: int | None = None) -> int:
    """This process's batch per identity for `batch_size: auto` (module docstring). `fits` and
    `free_bytes` default to a trial step and the device's free memory."""
    if device.type != "cuda" and free_bytes is None:
        share = max(1, default // world)
        log(f"batch_size auto on the {device.type}: the preset's default {default} per identity "
            "(no GPU memory to fill)")
        return share
    if free_bytes is None:
        free_bytes, _ = torch.cuda.mem_get_info(device)
    b = largest_fitting(cfg, free_bytes)
    tried = []
    while fits is not None and b > 1 and not fits(b):
        tried.append(b)
        b //= 2
    note = f" (out of memory at {', '.join(map(str, tried))})" if tried else ""
    log(f"batch_size auto: {b} per identity per process fits {free_bytes / GIB:.1f} GiB free on {device}{note}")
    return b


if __name__ == "__main__":
    for name, p in PRESETS.items():
        cfg = ModelConfig(p.face_size, p.encoder_width, p.decoder_width, p.bottleneck, ("src", "dst"))
        params = sum(q.numel() for q in build_model(cfg).parameters())
        print(f"{name}: {p.face_size}px widths {p.encoder_width}/{p.decoder_width} bottleneck {p.bottleneck}, "
              f"{params / 1e6:.1f} M params, batch {p.batch}: {estimate_bytes(cfg, p.batch) / GIB:.1f} GiB estimated")
