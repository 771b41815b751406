"""Which torch device a stage's model work runs on (`base.device`)."""

from __future__ import annotations

import torch


def pick_device(device: str) -> torch.device:
    """base.device: `auto` takes CUDA when torch sees a GPU, else the CPU; `cpu` and `cuda` as named."""
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")
