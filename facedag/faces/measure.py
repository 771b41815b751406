"""One face's loose crop to an aligned face with its measurements: what align@ID does per face,
and what trim and profile do for each sampled frame's face.

The landmarker (`align.landmarker`, facedag.faces.landmarkers) places the face's landmarks;
the similarity from them to the template (fitted to the mesh's stable points, or to five
points) warps the loose crop to `face_size` (facedag.faces.align); pose comes from the
landmarker where it measures it (the mesh's fitted head) and from five-point PnP otherwise;
expression from the blendshapes (jaw open, blinks, smile) where there are any, from the image
proxies otherwise (facedag.faces.features); lighting and sharpness from the aligned image.
Each way a face can be unusable is a Rejected with align's reason code, so that the stage
records it and goes on.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from facedag.faces.align import align_face, check_landmarks, compose, invert_affine, transform_points
from facedag.faces.features import face_features, head_pose
from facedag.faces.landmarkers import FaceLandmarks, Landmarker
from facedag.records import Rejected


@dataclass(frozen=True)
class AlignedFace:
    """A face aligned and measured: `features` has every name of facedag.tables.FEATURES, and
    `smile` where the landmarker gave blendshapes."""

    image: np.ndarray  # RGB uint8 (face_size, face_size, 3)
    matrix: np.ndarray  # 2x3, frame px -> aligned px
    landmarks: FaceLandmarks
    features: dict[str, float]

    @property
    def mesh(self) -> np.ndarray | None:
        """The mesh in aligned px, float32 (478, 2), or None for a five-point face."""
        if not self.landmarks.dense:
            return None
        return transform_points(self.landmarks.points, self.matrix).astype(np.float32)


def blendshape_expression(blendshapes: np.ndarray) -> dict[str, float]:
    """mouth_open, eyes_open and smile (0..1) from the 52 blendshapes (facedag.faces.mesh order)."""
    from facedag.faces.mesh import BLENDSHAPES

    b = dict(zip(BLENDSHAPES, np.asarray(blendshapes, dtype=np.float64), strict=True))
    return {
        "mouth_open": b["jawOpen"],
        "eyes_open": 1.0 - (b["eyeBlinkLeft"] + b["eyeBlinkRight"]) / 2,
        "smile": (b["mouthSmileLeft"] + b["mouthSmileRight"]) / 2,
    }


def measure_face(crop: np.ndarray, crop_matrix: np.ndarray, points: np.ndarray, frame_shape: tuple[int, ...],
                 face_size: int, landmarker: Landmarker) -> AlignedFace:  # fmt: skip
    """Landmark, align and measure one face from its loose crop (see the module doc).

    Raises Rejected: `degenerate_landmarks` (non-finite, collapsed or mirrored points; a
    matrix that is not a similarity), `pose_failed` (PnP found no pose).
    """
    try:
        cm = np.asarray(crop_matrix, dtype=np.float64).reshape(2, 3)
        found = landmarker(crop, cm, np.asarray(points, dtype=np.float64).reshape(5, 2))
        check_landmarks(found.five)
        m = found.matrix(face_size)
        aligned = align_face(crop, compose(m, invert_affine(cm)), face_size)
    except (ValueError, TypeError, cv2.error, np.linalg.LinAlgError) as exc:
        raise Rejected("degenerate_landmarks", str(exc)) from None
    if found.pose is not None:
        yaw, pitch, roll = found.pose
    else:
        try:
            yaw, pitch, roll = head_pose(found.five, frame_shape)
        except (ValueError, cv2.error) as exc:
            raise Rejected("pose_failed", str(exc)) from None
    feats = {"yaw": yaw, "pitch": pitch, "roll": roll, **face_features(aligned)}
    if found.blendshapes is not None:
        feats.update(blendshape_expression(found.blendshapes))
    return AlignedFace(aligned, m, found, feats)
