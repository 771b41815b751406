"""Erosion and inward feathering of a filled mask, shared by every mask kind.

The feather is *inward*: the region is eroded by `erode + feather` and blurred by a Gaussian
truncated at `feather`, so the mask is exactly 0 outside the region: pixels there are never
touched. Both are fractions of the face side, so one setting suits every face_size.
"""

from __future__ import annotations

import cv2
import numpy as np


def erode_and_feather(canvas: np.ndarray, erode: float, feather: float) -> np.ndarray:
    """`canvas` (uint8, 255 inside the region) -> float32 mask in [0, 1] (see the module doc)."""
    size = canvas.shape[0]
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
