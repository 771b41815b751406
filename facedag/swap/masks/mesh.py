"""`mesh`: the face oval of the dense mesh, as faceswap's "components" mask.

The hull of the mesh's outline (facedag.faces.mesh.regions()["oval"]) follows the real jaw,
chin and hairline of each frame's face, where the five-point `hull` guesses them from the eye
and mouth spacing (and so cuts the chin or takes in background on a long or a turned face).
A face the landmarker could only place by five points gets the `hull` mask instead.
"""

from __future__ import annotations

import cv2
import numpy as np

from facedag.faces.mesh import regions
from facedag.swap.masks import hull
from facedag.swap.masks._mesh import mesh_points
from facedag.swap.masks._shape import erode_and_feather


def fill_hull(size: int, points: np.ndarray) -> np.ndarray:
    """uint8 (size, size) canvas, 255 inside the convex hull of `points` (aligned px)."""
    poly = cv2.convexHull(np.round(np.asarray(points, np.float64) * 16).astype(np.int32))  # 4 fractional bits
    canvas = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(canvas, poly, 255, lineType=cv2.LINE_8, shift=4)
    return canvas


def outline(mesh: np.ndarray) -> np.ndarray:
    """The oval's points of a (478, 2) mesh."""
    return mesh[regions()["oval"]]


def region(size: int, landmarks: np.ndarray) -> np.ndarray:
    """uint8 (size, size), 255 inside the face's oval (the five-point hull's region for a five-point face),
    before erosion and feather: also the bound of the `learned` mask."""
    mesh = mesh_points(landmarks)
    if mesh is None:
        return hull.region(size, landmarks)
    return fill_hull(size, outline(mesh))


def build(size: int, landmarks: np.ndarray, erode: float = 0.02, feather: float = 0.06,
          predicted: np.ndarray | None = None) -> np.ndarray:
    """The oval mask of one aligned face: float32 (size, size) in [0, 1], 0 outside the oval.
    (`predicted`, the model's mask, is for the `learned` kind; this one does not use it.)"""
    return erode_and_feather(region(size, landmarks), erode, feather)
