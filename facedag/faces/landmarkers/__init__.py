"""Landmarkers, one file per kind (`align.landmarker`): where each face's landmarks come from.

Each module exposes `Landmarker`, a class built with no arguments (it loads its model once)
and called once per face:

    Landmarker()(crop, crop_matrix, points) -> np.ndarray

`crop` is the face's loose crop (RGB uint8, extract's `crop`), `crop_matrix` the 2x3 frame ->
crop matrix, `points` the detector's five points in frame px (facedag.faces.detect order). It
returns the face's landmarks in frame px, float64 (N, 2), the five points' counterparts first,
or raises ValueError when it cannot place them. Kinds: `retinaface` (the detector's own five
points).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from facedag.registry import Registry


class Landmarker(Protocol):
    def __call__(self, crop: np.ndarray, crop_matrix: np.ndarray, points: np.ndarray) -> np.ndarray: ...


LANDMARKERS: Registry[type[Landmarker]] = Registry(__name__, "landmarker", "Landmarker")
