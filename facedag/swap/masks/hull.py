"""`hull`: the inner face derived from five landmarks.

Only five landmarks exist (facedag.faces.detect), so the face outline is *derived* from them:
from the eye line (direction and eye distance `d`) and the eye-to-mouth distance `h`,
`face_outline` places forehead, temple, cheek, jaw and chin points around the eyes, nose and
mouth, and the mask is their convex hull. Built from each frame's own aligned landmarks (not
the fixed template), it follows the face's yaw: the hull leans with the nose. The hull is the
inner face (brows to chin, inside the cheeks), as DeepFaceLab's default "full face" mask: hair
and background stay the target's.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from facedag.faces.mesh import five_points
from facedag.swap.masks._mesh import mesh_points
from facedag.swap.masks._shape import erode_and_feather


def face_outline(landmarks: np.ndarray) -> np.ndarray:
    """Outline points (float64 (N, 2)) of the inner face around 5 landmarks (facedag.faces.detect order)."""
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


def region(size: int, landmarks: np.ndarray) -> np.ndarray:
    """uint8 (size, size), 255 inside the hull, before erosion and feather.

    `landmarks` are five points, or a mesh (its five detector-order points are used)."""
    mesh = mesh_points(landmarks)
    pts = face_outline(five_points(mesh) if mesh is not None else landmarks)
    hull = cv2.convexHull(np.round(pts * 16).astype(np.int32))  # 4 fractional bits
    canvas = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(canvas, hull, 255, lineType=cv2.LINE_8, shift=4)
    return canvas


def build(size: int, landmarks: np.ndarray, erode: float = 0.02, feather: float = 0.06,
          predicted: np.ndarray | None = None) -> np.ndarray:
    """The hull mask of one aligned face: float32 (size, size) in [0, 1], 0 outside the hull
    (`predicted` is the `learned` kind's; unused here)."""
    return erode_and_feather(region(size, landmarks), erode, feather)
