"""Which torch device, and which precision, a stage's model work runs on (the top-level `device`
param, read by train, evaluate_model and convert only).

Why its own top-level key and not `base.device`: eight stages track `base` whole, so switching
`auto` to `cuda` there reran the whole data half, whose outputs do not depend on it. Tracked by
the three model stages alone, a change reruns exactly those.

One helper picks and validates it, so that `device: cuda` on a machine without a GPU is one
line (StageFailed) before any work starts, not a traceback deep in the first step.
"""

from __future__ import annotations

import torch

from facedag.records import StageFailed


def pick_device(device: str) -> torch.device:
    """`auto` takes the first CUDA GPU when torch sees one, else the CPU; `cpu`, `cuda` and `cuda:<n>`
    as named, after checking that this machine has it (StageFailed, one line, otherwise)."""
    if device == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise StageFailed(f"device: {device!r} is not a device: use auto, cpu, cuda or cuda:<n>") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise StageFailed(f"device: {device!r} is not supported: use auto, cpu, cuda or cuda:<n>")
    if not torch.cuda.is_available():
        build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise StageFailed(f"device: {device} but torch {torch.__version__} ({build}) sees no CUDA GPU here: "
                          "set device: auto or cpu, or check the driver (nvidia-smi)")
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise StageFailed(f"device: {device} but this machine has {count} CUDA GPU(s) (cuda:0..cuda:{count - 1})")
    return dev


def pick_precision(device: torch.device) -> str:
    """The training precision `device` supports: `bf16` autocast on GPUs that do it natively
    (Ampere and later), `fp16` autocast with a gradient scaler on older GPUs (bf16 is emulated
    or refused there), `fp32` on the CPU (autocast there buys little for these convs and changes
    the numbers that bit-exact resumes compare)."""
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a precision from pick_precision (None: no autocast)."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def optimiser_step(loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    """Backward and one optimiser step; under fp16 (a `scaler`) the loss is scaled so small
    gradients survive and a step that overflowed is skipped. The generator's step and the
    discriminators' (facedag.training.adversarial) share it."""
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        opt.step()
