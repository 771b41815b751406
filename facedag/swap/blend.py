"""Blending a generated face back into a frame: the mask, colour matching and the paste.

The mask comes from the mask plugin `convert.mask` picks (facedag.swap.masks: one file per
kind), eroded and feathered inward so that it is exactly 0 outside its region.

Colour matching
---------------
The generated face is lit like the training data; `match_colour` moves its colour statistics
toward those of the target's face it replaces, with the mode `convert.colour` picks
(facedag.swap.colour: one file per mode). The statistics come from where the face is pasted
opaque (`colour_region`: mask >= 0.98), not from the whole mask: that is the part seen
unblended, whose colour must match what it covers, while the feathered rim is a mix of both
images anyway, and it is there that the hull (derived from five points) takes in hair or
background on the target's side and generated skin on the face's. Reading the rim too left
the face 3.1 delta E off on the samples (mostly toward green, from foliage behind the
hikers); reading the opaque part, 0.2 (README, "Quality you can measure").

The paste
---------
`paste` warps the face and the mask with the inverse of the aligned matrix into the frame
region the aligned square covers only (not the whole frame: 20x less work on a 640x480 frame
with a 100 px face) and blends `frame + alpha * (face - frame)` there.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from facedag.faces.align import invert_affine, transform_points
from facedag.swap.colour import COLOUR
from facedag.swap.masks import MASKS


def face_mask(size: int, landmarks: np.ndarray, erode: float = 0.02, feather: float = 0.06,
              kind: str = "hull", predicted: np.ndarray | None = None) -> np.ndarray:
    """The blend mask of one aligned face: float32 (size, size) in [0, 1], 0 outside its region.

    `landmarks` are the face's points in aligned px; `erode` and `feather` are fractions of
    `size`; `kind` names the mask plugin (facedag.swap.masks); `predicted` is the model's mask of
    the face, float32 (size, size), which the `learned` kind needs and the others ignore.
    """
    return MASKS.get(kind)(size, landmarks, erode, feather, predicted=predicted)


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


def match_colour(face: np.ndarray, target: np.ndarray, mask: np.ndarray, mode: str = "avg") -> np.ndarray:
    """`face` (RGB uint8) with its colour over `mask` moved toward `target`'s (same size).

    Statistics are taken over `colour_region(mask)` in both images; the transform is applied
    to the whole face (the mask decides later what is pasted). A mask with fewer than 16
    pixels above 0.5 returns the face unchanged. `mode` names the colour plugin (ValueError
    for an unknown one).
    """
    transfer = COLOUR.get(mode)
    if cv2.countNonZero((mask > 0.5).view(np.uint8)) < MIN_STATS_PX:
        return face
    return transfer(face, target, colour_region(mask))


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
