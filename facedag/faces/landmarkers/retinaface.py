"""`retinaface`: the five points RetinaFace gives with each detection (eyes, nose tip, mouth
corners). Free (they come with the box) and steady enough to align by; too few to outline the
face or to read pose and expression finely (facedag.faces.features derives those from them)."""

from __future__ import annotations

import numpy as np


class Landmarker:
    def __call__(self, crop: np.ndarray, crop_matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, dtype=np.float64).reshape(5, 2)
