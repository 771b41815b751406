"""`retinaface`: the five points RetinaFace gives with each detection (eyes, nose tip, mouth
corners). Free (they come with the box) and steady enough to align by; too few to outline the
face or to read pose and expression finely (facedag.faces.features derives those from them)."""

from __future__ import annotations

from types import TracebackType

import numpy as np

from facedag.faces.landmarkers import FaceLandmarks, five_point_landmarks


class Landmarker:
    def __call__(self, crop: np.ndarray, crop_matrix: np.ndarray, points: np.ndarray) -> FaceLandmarks:
        return five_point_landmarks(points)

    def __enter__(self) -> Landmarker:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        return None
