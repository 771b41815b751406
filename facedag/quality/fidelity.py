"""Pose and expression fidelity of a swap, as the face-swap papers report them.

A swap must keep the target's head pose and expression and change only who the face is.
FaceShifter, SimSwap and HifiFace report `pose error` (the distance between the head poses of
the output and the target, estimated by a pose model that neither side trained with) and
`expression error` (the distance between expression descriptors); DeepFaceLab's paper reports
a pose error of 1.12. Here both faces of each swapped frame are landmarked by MediaPipe's Face
Landmarker (facedag.faces.landmarkers.mediapipe) on crops around the detector's box, and:

- `pose_error` is the mean over frames of the mean absolute yaw, pitch and roll difference,
  degrees (facedag.faces.mesh.head_pose);
- `expression_error` is the mean over frames of the Euclidean distance between the two faces'
  51 expression blendshapes (all but `_neutral`, each 0..1): 0 for the same expression, about
  1 for a smile against a neutral face.

A frame counts only when the landmarker places the mesh on both faces; `fidelity_frames` says
how many did. The figures are model-relative (MediaPipe's pose and blendshapes), like the
papers' (Hopenet's pose, 3DMM expression coefficients): compare them between runs, not with
the papers' numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from facedag.faces.align import loose_crop
from facedag.faces.landmarkers import FaceLandmarks, Landmarker

CROP_SIZE = 128  # the crops the landmarker sees (extract's loose crop at this face size)


def _landmarks(image: np.ndarray, points: np.ndarray, landmarker: Landmarker) -> FaceLandmarks | None:
    try:
        crop, cm = loose_crop(image, points, CROP_SIZE)
    except ValueError:
        return None
    found = landmarker(crop, cm, points)
    return found if found.dense and found.pose is not None and found.blendshapes is not None else None


def pose_difference(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    """Mean absolute difference of (yaw, pitch, roll), degrees, angles wrapped to [-180, 180)."""
    d = (np.asarray(a, np.float64) - np.asarray(b, np.float64) + 180.0) % 360.0 - 180.0
    return float(np.abs(d).mean())


def expression_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance of two faces' blendshapes, `_neutral` (index 0) left out."""
    return float(np.linalg.norm(np.asarray(a, np.float64)[1:] - np.asarray(b, np.float64)[1:]))


@dataclass
class Fidelity:
    """Accumulates pose and expression error over swapped frames (see the module doc)."""

    landmarker: Landmarker
    pose: list[float] = field(default_factory=list)
    expression: list[float] = field(default_factory=list)
    unscored: int = 0

    def add(self, target: np.ndarray, target_points: np.ndarray, output: np.ndarray,
            output_points: np.ndarray) -> dict[str, float | None]:  # fmt: skip
        """One swapped frame's faces (detector points in each frame): its pose and expression error."""
        ref = _landmarks(target, target_points, self.landmarker)
        got = _landmarks(output, output_points, self.landmarker)
        if ref is None or got is None:
            self.unscored += 1
            return {"pose_error": None, "expression_error": None}
        assert ref.pose is not None and got.pose is not None
        assert ref.blendshapes is not None and got.blendshapes is not None
        pose, expression = pose_difference(got.pose, ref.pose), expression_difference(got.blendshapes, ref.blendshapes)
        self.pose.append(pose)
        self.expression.append(expression)
        return {"pose_error": pose, "expression_error": expression}

    def result(self) -> dict[str, float | int | None]:
        return {
            "pose_error": round(float(np.mean(self.pose)), 3) if self.pose else None,
            "expression_error": round(float(np.mean(self.expression)), 4) if self.expression else None,
            "fidelity_frames": len(self.pose),
            "fidelity_unscored": self.unscored,
        }
