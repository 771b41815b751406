"""The training loss: masked SSIM + L1 on the face, with eyes and mouth weighted up.

Why masked: convert pastes back only the face region, so capacity spent on hair and background
is wasted; and the eyes and mouth are where a swap is judged (gaze, teeth, expression), yet they
are a few percent of the pixels, so a plain mean lets the model blur them.

The weight map is defined on the aligned template (facedag.align.template), so one map serves
every face of a size: 1 inside facedag.features.face_mask (softened by a small blur), 0 outside,
and `eyes_mouth_weight` over ellipses around the eyes and the mouth. The augmentation warps the
map with the target face (facedag.augment), so a shifted face keeps its weights.

SSIM is Wang et al. (2004) with an 11-tap Gaussian window (sigma 1.5), per channel, on images in
[0, 1]; DSSIM = (1 - SSIM) / 2 is the loss term. Identical images give exactly 0.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from facedag.align import template
from facedag.features import face_mask

C1 = 0.01**2
C2 = 0.03**2


@lru_cache(maxsize=8)
def _weight_map_np(size: int, eyes_mouth_weight: float) -> np.ndarray:
    mask = face_mask(size).astype(np.float32)
    sigma = max(size / 64.0, 0.5)
    mask = cv2.GaussianBlur(mask, (0, 0), sigma)
    t = template(size)
    eye_d = float(t[1, 0] - t[0, 0])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)

    def ellipse(cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
        return ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1.0

    features = ellipse(float(t[0, 0]), float(t[0, 1]), 0.32 * eye_d, 0.2 * eye_d)
    features |= ellipse(float(t[1, 0]), float(t[1, 1]), 0.32 * eye_d, 0.2 * eye_d)
    mouth_w = float(t[4, 0] - t[3, 0])
    mouth_c = (t[3] + t[4]) / 2
    features |= ellipse(float(mouth_c[0]), float(mouth_c[1]) + 0.05 * eye_d, 0.7 * mouth_w, 0.3 * eye_d)
    weights = np.where(features, float(eyes_mouth_weight), 1.0).astype(np.float32)
    weights = cv2.GaussianBlur(weights, (0, 0), sigma)
    out = mask * weights
    out.flags.writeable = False
    return out


def weight_map(size: int, eyes_mouth_weight: float = 3.0, device: str | torch.device = "cpu") -> torch.Tensor:
    """(1, 1, S, S) float32 loss weights on the aligned template: face 1, eyes/mouth heavier, outside 0."""
    return torch.from_numpy(np.array(_weight_map_np(int(size), float(eyes_mouth_weight)))).to(device)[None, None]


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


def _weighted_mean(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-sample weighted mean over channels and pixels; weights (N or 1, 1, H, W)."""
    w = weights.expand(x.shape[0], 1, *x.shape[2:])
    num = (x * w).sum(dim=(1, 2, 3))
    den = w.sum(dim=(1, 2, 3)) * x.shape[1]
    return num / den.clamp_min(1e-8)


def masked_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, ssim_weight: float = 0.85,
                l1_weight: float = 0.15) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Scalar loss = ssim_weight * masked DSSIM + l1_weight * masked L1 (batch mean), and its parts.

    Computed in float32 even under autocast: SSIM's variance terms cancel badly in bf16.
    """
    pred, target, weights = pred.float(), target.float(), weights.float()
    dssim = _weighted_mean((1.0 - ssim_map(pred, target)) / 2.0, weights).mean()
    l1 = _weighted_mean((pred - target).abs(), weights).mean()
    return ssim_weight * dssim + l1_weight * l1, {"dssim": dssim.detach(), "l1": l1.detach()}


def masked_ssim(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample mean SSIM over a (1 or N, 1, H, W) mask: the held-out quality figure (1 = perfect)."""
    return _weighted_mean(ssim_map(pred.float(), target.float()), mask.float())


def face_region(size: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """(1, 1, S, S) float32 0/1 face mask on the aligned template, for evaluation."""
    return torch.from_numpy(face_mask(int(size)).astype(np.float32)).to(device)[None, None]
