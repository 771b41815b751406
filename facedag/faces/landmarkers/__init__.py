"""Landmarkers, one file per kind (`align.landmarker`): where each face's landmarks come from.

Each module exposes `Landmarker`, a class built with no arguments (it loads its model once),
used as a context manager (a model may hold native resources) and called once per face:

    with Landmarker() as landmarker:
        found = landmarker(crop, crop_matrix, points)   # -> FaceLandmarks

`crop` is the face's loose crop (RGB uint8, extract's `crop`), `crop_matrix` the 2x3 frame ->
crop matrix, `points` the detector's five points in frame px (facedag.faces.detect order).
Landmarkers run on the crop, not the frame: MediaPipe's own detector misses faces of 90 px and
less in a 1080p frame but finds them in a crop about three times the face's box, which is
what extract stores. A landmarker that cannot place a face returns the detector's five points
with `source == "five_points"`, so a face is never lost to the landmarker and each row says
which it got. Kinds: `mediapipe` (478 points, pose, 52 blendshapes), `retinaface` (the
detector's own five points).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

import numpy as np

from facedag.faces.align import aligned_matrix
from facedag.registry import Registry

MESH = "mesh"
FIVE_POINTS = "five_points"


@dataclass(frozen=True)
class FaceLandmarks:
    """One face's landmarks in frame px, and what the landmarker measured besides.

    `points` are all the landmarker placed (478 for the mesh, the five otherwise); `five` are
    the detector-order five points (from the mesh when there is one); `pose` is (yaw, pitch,
    roll) in degrees with facedag.faces.features.head_pose's signs, and `blendshapes` the 52
    expression scores (facedag.faces.mesh.BLENDSHAPES order), both None when the landmarker
    does not measure them.
    """

    points: np.ndarray
    five: np.ndarray
    source: str
    pose: tuple[float, float, float] | None = None
    blendshapes: np.ndarray | None = None

    @property
    def dense(self) -> bool:
        return self.source == MESH

    def matrix(self, size: int) -> np.ndarray:
        """The similarity frame px -> aligned px: fitted to the mesh's stable points, or to the five."""
        if self.dense:
            from facedag.faces.mesh import dense_matrix

            return dense_matrix(self.points, size)
        return aligned_matrix(self.five, size)


def five_point_landmarks(points: np.ndarray) -> FaceLandmarks:
    """The detector's five points as a FaceLandmarks (what every landmarker falls back to)."""
    five = np.asarray(points, dtype=np.float64).reshape(5, 2)
    return FaceLandmarks(points=five, five=five, source=FIVE_POINTS)


class Landmarker(Protocol):
    def __call__(self, crop: np.ndarray, crop_matrix: np.ndarray, points: np.ndarray) -> FaceLandmarks: ...

    def __enter__(self) -> Landmarker: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...  # fmt: skip


LANDMARKERS: Registry[type[Landmarker]] = Registry(__name__, "landmarker", "Landmarker")
