"""`rct`: Reinhard et al. 2001 colour transfer, per-channel L*a*b* mean and standard deviation
(DeepFaceLab's "rct")."""

from __future__ import annotations

import numpy as np

from facedag.swap.colour._lab import from_lab, stats, to_lab

MIN_SPREAD = 1e-3
MAX_RATIO = 4.0  # a flat face must not explode


def transfer(face: np.ndarray, target: np.ndarray, region: np.ndarray) -> np.ndarray:
    src, dst = to_lab(face), to_lab(target)
    mean_face, spread_face = stats(src, region)
    mean_target, spread_target = stats(dst, region)
    ratio = np.clip(spread_target / np.maximum(spread_face, MIN_SPREAD), 1.0 / MAX_RATIO, MAX_RATIO)
    return from_lab((src - mean_face) * ratio + mean_target)
