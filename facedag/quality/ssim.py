"""SSIM (Wang et al. 2004): an 11-tap Gaussian window (sigma 1.5), per channel, on images in [0, 1].

One implementation for the training loss (facedag.training.losses) and the quality metrics
(facedag.quality.metrics), so that a held-out SSIM means the same number in both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

C1 = 0.01**2
C2 = 0.03**2


def _gaussian_window(device: torch.device, dtype: torch.dtype, size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).to(dtype)


def ssim_map(a: torch.Tensor, b: torch.Tensor, window: int = 11) -> torch.Tensor:
    """Per-pixel, per-channel SSIM of two (N, C, H, W) images in [0, 1]; same shape out.

    Separable Gaussian filtering (two 1-D passes), replicate padding so the map covers every pixel.
    """
    _, c, h, w = a.shape
    win = min(window, h, w) | 1  # odd, and no larger than the image (tiny test faces)
    g = _gaussian_window(a.device, a.dtype, win)
    gx = g.view(1, 1, 1, win).expand(c, 1, 1, win)
    gy = g.view(1, 1, win, 1).expand(c, 1, win, 1)
    pad = win // 2

    def blur(x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (pad, pad, pad, pad), mode="replicate")
        return F.conv2d(F.conv2d(x, gx, groups=c), gy, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    mu_aa, mu_bb, mu_ab = mu_a * mu_a, mu_b * mu_b, mu_a * mu_b
    var_a = blur(a * a) - mu_aa
    var_b = blur(b * b) - mu_bb
    cov = blur(a * b) - mu_ab
    return ((2 * mu_ab + C1) * (2 * cov + C2)) / ((mu_aa + mu_bb + C1) * (var_a + var_b + C2))
