"""`hist`: per-channel histogram matching, each grey level of the face through its CDF onto the
target's."""

from __future__ import annotations

import numpy as np


def transfer(face: np.ndarray, target: np.ndarray, region: np.ndarray) -> np.ndarray:
    out = np.empty_like(face)
    levels = np.arange(256, dtype=np.float64)
    for c in range(3):
        hist_face = np.bincount(face[..., c][region], minlength=256).astype(np.float64)
        hist_target = np.bincount(target[..., c][region], minlength=256).astype(np.float64)
        cdf_face, cdf_target = np.cumsum(hist_face) / hist_face.sum(), np.cumsum(hist_target) / hist_target.sum()
        lut = np.interp(cdf_face, cdf_target, levels)
        out[..., c] = np.clip(lut + 0.5, 0, 255).astype(np.uint8)[face[..., c]]
    return out
