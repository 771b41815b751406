"""One extracted face to an aligned face with its measurements: what align@ID does per face.

The landmarker (`align.landmarker`, facedag.faces.landmarkers) places the face's landmarks,
the similarity from them to the template warps the loose crop to `face_size`
(facedag.faces.align), and pose, lighting, sharpness and expression are measured
(facedag.faces.features). Each way a face can be unusable is a Rejected with align's reason
code, so that the stage records it and goes on.
"""

from __future__ import annotations

import cv2
import numpy as np

from facedag.faces.align import as_matrix, check_landmarks, face_from_crop
from facedag.faces.features import face_features, head_pose
from facedag.faces.landmarkers import Landmarker
from facedag.records import Rejected
from facedag.tables import decode_image


def align_face_row(crop_bytes: bytes, crop_matrix: object, points: object, frame_shape: tuple[int, int],
                   face_size: int, landmarker: Landmarker) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """One face of extract's table: (aligned RGB, matrix frame px -> aligned px, features).

    Raises Rejected: `undecodable_crop` (the crop bytes do not decode), `degenerate_landmarks`
    (non-finite, collapsed or mirrored points; a matrix that is not a similarity), `pose_failed`
    (PnP found no pose).
    """
    crop = decode_image(crop_bytes)
    if crop is None:
        raise Rejected("undecodable_crop", "the crop image does not decode")
    try:
        cm = as_matrix(crop_matrix)
        lm = landmarker(crop, cm, np.asarray(points, dtype=np.float64).reshape(5, 2))[:5]
        check_landmarks(lm)
        aligned, m = face_from_crop(crop, cm, lm, face_size)
    except (ValueError, TypeError, cv2.error, np.linalg.LinAlgError) as exc:
        raise Rejected("degenerate_landmarks", str(exc)) from None
    try:
        yaw, pitch, roll = head_pose(lm, frame_shape)
    except (ValueError, cv2.error) as exc:
        raise Rejected("pose_failed", str(exc)) from None
    feats = {"yaw": yaw, "pitch": pitch, "roll": roll, **face_features(aligned)}
    return aligned, m, feats
