"""Shared by the mesh mask kinds: the face's dense points in aligned px, or None for five points."""

from __future__ import annotations

import numpy as np

from facedag.faces.mesh import POINTS


def mesh_points(landmarks: np.ndarray) -> np.ndarray | None:
    """`landmarks` as (478, 2) float64 when they are a mesh, None when they are five points."""
    pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    return pts if len(pts) == POINTS else None
