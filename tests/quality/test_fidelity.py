"""facedag.quality.fidelity on real faces: the same face scores 0, a planted roll scores its
angle, another expression scores far from 0."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facedag.faces.detect import FaceDetector
from facedag.faces.landmarkers import LANDMARKERS
from facedag.quality.fidelity import Fidelity, pose_difference
from tests.faces.test_align import PORTRAITS


@pytest.fixture(scope="module")
def fidelity():
    with LANDMARKERS.get("mediapipe")() as landmarker:
        yield Fidelity(landmarker)


def face_points(image: np.ndarray) -> np.ndarray:
    return max(FaceDetector(min_size=20, max_side=4096).detect(image), key=lambda d: d.size).landmarks


def portrait(i: int) -> np.ndarray:
    return PORTRAITS[i].values[0]


def test_the_same_face_scores_zero(fidelity: Fidelity) -> None:
    image = portrait(0)
    points = face_points(image)
    row = fidelity.add(image, points, image.copy(), points)
    assert row["pose_error"] == 0 and row["expression_error"] == 0


def test_a_planted_roll_scores_its_angle(fidelity: Fidelity) -> None:
    image = portrait(1)
    points = face_points(image)
    centre = tuple(float(v) for v in points.mean(0))
    rot = cv2.getRotationMatrix2D(centre, 12.0, 1.0)
    turned = cv2.warpAffine(image, rot, image.shape[1::-1], borderMode=cv2.BORDER_REFLECT)
    row = fidelity.add(image, points, turned, face_points(turned))
    # 12 degrees of roll, yaw and pitch unchanged: a mean of about 12 / 3
    assert row["pose_error"] == pytest.approx(4.0, abs=1.5)


def test_another_expression_is_far(fidelity: Fidelity) -> None:
    smiling, neutral = portrait(0), portrait(1)  # the astronaut smiles; Grace Hopper does not
    row = fidelity.add(smiling, face_points(smiling), neutral, face_points(neutral))
    assert row["expression_error"] > 0.5
    summary = fidelity.result()
    assert summary["fidelity_frames"] >= 1 and summary["expression_error"] is not None


def test_pose_difference_wraps_angles() -> None:
    assert pose_difference((179.0, 0.0, 0.0), (-179.0, 0.0, 0.0)) == pytest.approx(2 / 3)
