"""The training loss: masked SSIM + L1 on the face, with eyes and mouth weighted up.

Why masked: convert pastes back only the face region, so capacity spent on hair and background
is wasted; and the eyes and mouth are where a swap is judged (gaze, teeth, expression), yet they
are a few percent of the pixels, so a plain mean lets the model blur them.

Each face with a mesh (align's `mesh`, facedag.faces.mesh) has its own weight map
(`mesh_weight_map`): 1 inside its face oval (softened by a small blur), 0 outside, and
`eyes_mouth_weight` over its own eyes, brows and lips, half that extra over its nose, so the
weights sit on a squinting eye or an open mouth wherever the face puts them. A face aligned
by five points gets the template's map (`weight_map`): 1 inside
facedag.faces.features.face_mask, `eyes_mouth_weight` over ellipses where the template puts
the eyes and the mouth. The augmentation warps the map with the target face
(facedag.training.augment), so a shifted face keeps its weights.

SSIM is facedag.quality.ssim's (the same SSIM the quality metrics report); DSSIM = (1 - SSIM) / 2
is the loss term. Identical images give exactly 0.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
import torch

from facedag.faces.align import template
from facedag.faces.features import face_mask
from facedag.quality.ssim import ssim_map


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


def _fill(pts: np.ndarray, size: int, *names: str) -> np.ndarray:
    """float32 (S, S): 1 inside the convex hulls of the mesh's named regions (facedag.faces.mesh.regions)."""
    from facedag.faces.mesh import regions

    r = regions()
    canvas = np.zeros((size, size), np.float32)
    for name in names:
        hull = cv2.convexHull(np.round(pts[r[name]] * 16).astype(np.int32))
        cv2.fillConvexPoly(canvas, hull, 1.0, lineType=cv2.LINE_8, shift=4)
    return canvas


def mesh_region(mesh: np.ndarray, size: int) -> np.ndarray:
    """uint8 (S, S), 255 inside one face's mesh oval (aligned px): where the learned mask should
    say "face" before occluders come off (the oval the `mesh` convert mask fills)."""
    pts = np.asarray(mesh, dtype=np.float64).reshape(-1, 2)
    return (_fill(pts, size, "oval") * 255).astype(np.uint8)


def mesh_weight_map(mesh: np.ndarray, size: int, eyes_mouth_weight: float = 3.0) -> np.ndarray:
    """float32 (S, S) loss weights of one face from its mesh in aligned px (see the module doc)."""
    pts = np.asarray(mesh, dtype=np.float64).reshape(-1, 2)
    sigma = max(size / 64.0, 0.5)

    def fill(*names: str) -> np.ndarray:
        return _fill(pts, size, *names)

    face = cv2.GaussianBlur(fill("oval"), (0, 0), sigma)
    extra = float(eyes_mouth_weight) - 1.0
    features = np.maximum(fill("eye_l", "eye_r", "brow_l", "brow_r", "lips"), 0.5 * fill("nose"))
    # the features a little wider than their outlines (lids, lip edges), then softened
    features = cv2.dilate(features, np.ones((3, 3), np.uint8), iterations=max(1, round(size / 64)))
    weights = 1.0 + extra * cv2.GaussianBlur(features, (0, 0), sigma)
    return (face * weights).astype(np.float32)


def weight_map(size: int, eyes_mouth_weight: float = 3.0, device: str | torch.device = "cpu") -> torch.Tensor:
    """(1, 1, S, S) float32 loss weights on the aligned template: face 1, eyes/mouth heavier, outside 0."""
    return torch.from_numpy(np.array(_weight_map_np(int(size), float(eyes_mouth_weight)))).to(device)[None, None]


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


OCCLUDER_MASK_WEIGHT = 10.0  # extra weight of occluded pixels in the mask loss (see mask_loss)


def mask_loss(pred: torch.Tensor, target: torch.Tensor, cover: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy of the learned mask (N, 1, S, S) in [0, 1] against its target (the face
    region minus the occluders, facedag.training.occluders), over every pixel, in float32.

    BCE rather than L1: its gradient does not fade on pixels that are confidently wrong, which
    is what an occluder's edge inside the face is for a mask that has learned the oval
    (measured on the planted occluder at 400 demo steps: BCE kept 99.8 % of it, L1 with the same
    weighting 49.6 %). The
    occluder's pixels (`cover`) weigh 1 + OCCLUDER_MASK_WEIGHT: they are a few percent of the
    pixels and the whole point of the mask; unweighted, 200 demo steps learned the oval and
    not one occluder (benchmarks/bench_occluder.py)."""
    p = pred.float().clamp(1e-6, 1.0 - 1e-6)
    t = target.float()
    bce = -(t * torch.log(p) + (1.0 - t) * torch.log1p(-p))
    if cover is None:
        return bce.mean()
    w = 1.0 + OCCLUDER_MASK_WEIGHT * cover.float()
    return (bce * w).sum() / w.sum()
