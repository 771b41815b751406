"""Blending a generated face back into a frame: the mask, colour matching and the paste.

The mask
--------
Only five landmarks exist (facedag.detect), so the face outline is *derived* from them in
aligned space: from the eye line (direction and eye distance `d`) and the eye-to-mouth
distance `h`, `face_outline` places forehead, temple, cheek, jaw and chin points around the
eyes, nose and mouth, and the mask is their convex hull. Built from each frame's own aligned
landmarks (not the fixed template), it follows the face's yaw: the hull leans with the nose.
The hull is the inner face (brows to chin, inside the cheeks), as DeepFaceLab's default
"full face" mask: hair and background stay the target's.

It is then eroded by `erode` and feathered by `feather` (both fractions of the face side, so
one setting suits every face_size). The feather is *inward*: the hull is eroded by
`erode + feather` and blurred by a Gaussian truncated at `feather`, so the mask is exactly 0
outside the hull: pixels there are never touched, which convert's tests check.

Colour matching
---------------
The generated face is lit like the training data; `match_colour` moves its colour statistics
toward those of the target's face it replaces. The statistics come from where the face is
pasted opaque (`colour_region`: mask >= 0.98), not from the whole mask: that is the part seen
unblended, whose colour must match what it covers, while the feathered rim is a mix of both
images anyway, and it is there that the hull (derived from five points) takes in hair or
background on the target's side and generated skin on the face's. Reading the rim too left
the face 3.1 delta E off on the samples (mostly toward green, from foliage behind the
hikers); reading the opaque part, 0.2 (README, "Quality you can measure"). Modes:
- `rct`: Reinhard et al. 2001 colour transfer: per-channel mean and standard deviation in
  L*a*b* (DeepFaceLab's "rct");
- `avg`: the per-channel L*a*b* mean only (keeps the generated contrast);
- `hist`: per-channel histogram matching (the generated face's CDF onto the target's);
- `none`.

The paste
---------
`paste` warps the face and the mask with the inverse of the aligned matrix into the frame
region the aligned square covers only (not the whole frame: 20x less work on a 640x480 frame
with a 100 px face) and blends `frame + alpha * (face - frame)` there.
"""

from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np

from facedag.align import invert_affine, transform_points

ColourMode = Literal["rct", "avg", "hist", "none"]
COLOUR_MODES: tuple[str, ...] = ("rct", "avg", "hist", "none")


def face_outline(landmarks: np.ndarray) -> np.ndarray:
    """Outline points (float64 (N, 2)) of the inner face around 5 landmarks (facedag.detect order)."""
    lm = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    eye_l, eye_r, nose, mouth_l, mouth_r = lm
    eyes = (eye_l + eye_r) / 2
    mouth = (mouth_l + mouth_r) / 2
    u = eye_r - eye_l
    d = float(np.hypot(*u))
    if not math.isfinite(d) or d < 1e-6:
        raise ValueError("landmarks are degenerate (eyes at one point)")
    ux = u / d
    uy = np.array([-ux[1], ux[0]])  # "down" on the face (y grows downward)
    h = float(np.dot(mouth - eyes, uy))
    h = max(h, 0.5 * d)  # a collapsed mouth line still gets a chin
    pts = [
        eyes - 0.85 * d * uy,  # forehead centre (brows included)
        eyes - 0.6 * d * ux - 0.7 * d * uy,
        eyes + 0.6 * d * ux - 0.7 * d * uy,
        eye_l - 0.55 * d * ux - 0.25 * d * uy,  # temples
        eye_r + 0.55 * d * ux - 0.25 * d * uy,
        eye_l - 0.48 * d * ux + 0.6 * h * uy,  # cheeks
        eye_r + 0.48 * d * ux + 0.6 * h * uy,
        mouth_l - 0.5 * d * ux + 0.4 * h * uy,  # jaw
        mouth_r + 0.5 * d * ux + 0.4 * h * uy,
        mouth + 0.65 * h * uy,  # chin
        nose,
        eye_l,
        eye_r,
        mouth_l,
        mouth_r,
    ]
    return np.array(pts)


def face_mask(size: int, landmarks: np.ndarray, erode: float = 0.02, feather: float = 0.06) -> np.ndarray:
    """The blend mask of one aligned face: float32 (size, size) in [0, 1], 0 outside the hull.

    `landmarks` are the face's 5 points in aligned px; `erode` and `feather` are fractions of
    `size` (see the module docstring).
    """
    pts = face_outline(landmarks)
    hull = cv2.convexHull(np.round(pts * 16).astype(np.int32))  # 4 fractional bits
    canvas = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(canvas, hull, 255, lineType=cv2.LINE_8, shift=4)
    feather_px = max(0, round(feather * size))
    erode_px = max(0, round(erode * size)) + feather_px
    if erode_px > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erode_px + 1, 2 * erode_px + 1))
        canvas = cv2.erode(canvas, kernel)
    mask = canvas.astype(np.float32) / 255.0
    if feather_px > 0:
        k = 2 * feather_px + 1
        mask = cv2.GaussianBlur(mask, (k, k), sigmaX=feather_px / 2.0, borderType=cv2.BORDER_CONSTANT)
    mask[mask < 1.0 / 512] = 0.0  # below half a grey level: untouched
    return mask


# -- colour matching ---------------------------------------------------------------------------


STATS_ALPHA = 0.98  # colour statistics are read where the face is pasted (nearly) opaque
MIN_STATS_PX = 16


def colour_region(mask: np.ndarray) -> np.ndarray:
    """Where `match_colour` reads colour statistics (bool, the mask's shape): where mask >=
    STATS_ALPHA (module docstring); a mask too faint for that (a feather wider than the face)
    falls back to mask > 0.5."""
    opaque = mask >= STATS_ALPHA
    if cv2.countNonZero(opaque.view(np.uint8)) >= MIN_STATS_PX:
        return opaque
    return mask > 0.5


def _stats(x: np.ndarray, sel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    vals = x[sel]
    return vals.mean(0), vals.std(0)


def _to_lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def _from_lab(lab: np.ndarray) -> np.ndarray:
    lab[..., 0] = np.clip(lab[..., 0], 0, 100)
    rgb = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_LAB2RGB)
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def match_colour(face: np.ndarray, target: np.ndarray, mask: np.ndarray, mode: str = "rct") -> np.ndarray:
    """`face` (RGB uint8) with its colour over `mask` moved toward `target`'s (same size).

    Statistics are taken over `colour_region(mask)` in both images; the transform is applied
    to the whole face (the mask decides later what is pasted). A mask with fewer than 16
    pixels above 0.5 returns the face unchanged.
    """
    if mode == "none":
        return face
    if mode not in COLOUR_MODES:
        raise ValueError(f"unknown colour mode {mode!r} (use one of {', '.join(COLOUR_MODES)})")
    if cv2.countNonZero((mask > 0.5).view(np.uint8)) < MIN_STATS_PX:
        return face
    sel = colour_region(mask)
    if mode in ("rct", "avg"):
        src, dst = _to_lab(face), _to_lab(target)
        ms, ss = _stats(src, sel)
        mt, st = _stats(dst, sel)
        if mode == "avg":
            return _from_lab(src + (mt - ms))
        ratio = np.clip(st / np.maximum(ss, 1e-3), 0.25, 4.0)  # a flat face must not explode
        return _from_lab((src - ms) * ratio + mt)
    # hist: per channel, map each grey level through the face's CDF onto the target's
    out = np.empty_like(face)
    levels = np.arange(256, dtype=np.float64)
    for c in range(3):
        hs = np.bincount(face[..., c][sel], minlength=256).astype(np.float64)
        ht = np.bincount(target[..., c][sel], minlength=256).astype(np.float64)
        cs, ct = np.cumsum(hs) / hs.sum(), np.cumsum(ht) / ht.sum()
        lut = np.interp(cs, ct, levels)
        out[..., c] = np.clip(lut + 0.5, 0, 255).astype(np.uint8)[face[..., c]]
    return out


# -- pasting back ------------------------------------------------------------------------------


def paste(
    frame: np.ndarray, face: np.ndarray, mask: np.ndarray, matrix: np.ndarray
) -> tuple[int, tuple[int, int, int, int], np.ndarray] | None:
    """Blend the aligned `face` (S x S RGB) into `frame` (in place) through `mask` (S x S float).

    `matrix` is the face's frame px -> aligned px matrix; the face goes back with its inverse.
    Returns (mask area in frame px, (x0, y0, x1, y1) region, the region's alpha (float32)),
    or None when the face lies outside the frame.
    """
    size = face.shape[0]
    h, w = frame.shape[:2]
    inv = invert_affine(matrix)
    corners = transform_points(np.array([[-1, -1], [size, -1], [-1, size], [size, size]], np.float64), inv)
    x0 = max(0, math.floor(corners[:, 0].min()))
    y0 = max(0, math.floor(corners[:, 1].min()))
    x1 = min(w, math.ceil(corners[:, 0].max()) + 1)
    y1 = min(h, math.ceil(corners[:, 1].max()) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    m = inv.copy()
    m[:, 2] -= (x0, y0)
    rw, rh = x1 - x0, y1 - y0
    alpha = cv2.warpAffine(mask, m, (rw, rh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    alpha[alpha < 1.0 / 512] = 0.0
    area = int(np.count_nonzero(alpha))
    if area == 0:
        return 0, (x0, y0, x1, y1), alpha
    warped = cv2.warpAffine(face, m, (rw, rh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    roi = frame[y0:y1, x0:x1]
    base = roi.astype(np.float32)
    out = base + alpha[..., None] * (warped.astype(np.float32) - base)
    blended = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    keep = alpha == 0
    blended[keep] = roi[keep]  # exactly the frame where the mask is 0 (no rounding drift)
    roi[...] = blended
    return area, (x0, y0, x1, y1), alpha
