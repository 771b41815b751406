"""`extended`: the mesh's face oval raised up the forehead, as faceswap's "extended" mask.

MediaPipe's oval stops at the hairline's lower edge on most faces, a little above the brows:
a swap whose source has a higher or lower brow line then shows the target's forehead band.
`extended` moves the oval's points above the brows further up, each by `RAISE` of its height
above the brow line (measured along the face's own vertical, so it follows roll), as faceswap
raises its extended mask by half the brow-to-eye distance. The chin and cheeks are the oval's.
"""

from __future__ import annotations

import numpy as np

from facedag.faces.mesh import five_points, regions
from facedag.swap.masks import hull
from facedag.swap.masks._mesh import mesh_points
from facedag.swap.masks._shape import erode_and_feather
from facedag.swap.masks.mesh import fill_hull, outline

RAISE = 0.35  # how far the forehead points move, a fraction of their height above the brows


def extended_outline(mesh: np.ndarray) -> np.ndarray:
    """The oval of a (478, 2) mesh with its forehead points raised."""
    five = five_points(mesh)
    eye_line = five[1] - five[0]
    up = np.array([eye_line[1], -eye_line[0]]) / max(float(np.hypot(*eye_line)), 1e-6)  # toward the forehead
    r = regions()
    brows = mesh[np.concatenate([r["brow_l"], r["brow_r"]])]
    brow_level = float((brows @ up).max())
    pts = outline(mesh).copy()
    above = pts @ up - brow_level
    pts += np.clip(above, 0, None)[:, None] * RAISE * up
    return pts


def build(size: int, landmarks: np.ndarray, erode: float = 0.02, feather: float = 0.06,
          predicted: np.ndarray | None = None) -> np.ndarray:
    """The extended mask of one aligned face: float32 (size, size) in [0, 1], 0 outside it
    (`predicted` is the `learned` kind's; unused here)."""
    mesh = mesh_points(landmarks)
    if mesh is None:
        return hull.build(size, landmarks, erode, feather)
    return erode_and_feather(fill_hull(size, extended_outline(mesh)), erode, feather)
