"""facedag.faces.landmarkers on real faces: the mesh landmarker against five points.

The mirror test (a face and its mirror image: yaw changes sign, pitch agrees) and the
steadiness test (a still face moved by sub-pixel amounts) measure both kinds side by side.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facedag.faces.align import invert_affine, loose_crop, matrix_scale, transform_points
from facedag.faces.detect import FaceDetector
from facedag.faces.features import head_pose
from facedag.faces.landmarkers import LANDMARKERS, FaceLandmarks
from tests.faces.test_align import PORTRAITS, SAMPLES

FACE = 128


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(min_size=20, max_side=4096)


@pytest.fixture(scope="module")
def mesh_landmarker():
    with LANDMARKERS.get("mediapipe")() as landmarker:
        yield landmarker


def landmark(image: np.ndarray, detector: FaceDetector, landmarker) -> tuple[FaceLandmarks, tuple]:
    det = max(detector.detect(image), key=lambda d: d.size)
    crop, cm = loose_crop(image, det.landmarks, FACE)
    return landmarker(crop, cm, det.landmarks), head_pose(det.landmarks, image.shape)


VIDEO_FRAMES = [("video_01.mp4", 0.5), ("video_01.mp4", 2.0)]  # faces of 60-70 px; see the README for video_02


@pytest.mark.parametrize("image", [*PORTRAITS, *(pytest.param(v, id=f"{v[0]}@{v[1]}") for v in VIDEO_FRAMES)])
def test_mirror_image_flips_yaw_and_keeps_pitch(image: np.ndarray | tuple[str, float], detector: FaceDetector,
                                                mesh_landmarker) -> None:  # fmt: skip
    if isinstance(image, tuple):  # a frame of a sample video
        name, t = image
        if not (SAMPLES / name).exists():
            pytest.skip(f"../shared/samples/{name} is absent")
        from facedag.sources.media import iter_frames

        image = next(f.image for f in iter_frames(SAMPLES / name) if f.time >= t)
    found, five_pose = landmark(image, detector, mesh_landmarker)
    mirrored, five_mirrored = landmark(np.ascontiguousarray(image[:, ::-1]), detector, mesh_landmarker)
    assert found.dense and mirrored.dense and found.pose and mirrored.pose
    yaw, pitch, roll = found.pose
    myaw, mpitch, mroll = mirrored.pose
    print(f"mesh pitch {pitch:.1f}/{mpitch:.1f} yaw {yaw:.1f}/{myaw:.1f}; "
          f"five-point pitch {five_pose[1]:.1f}/{five_mirrored[1]:.1f}")
    assert abs(pitch - mpitch) < 3.0
    assert abs(yaw + myaw) < 3.0 and abs(roll + mroll) < 3.0
    assert found.points.shape == (478, 2) and found.blendshapes is not None and found.blendshapes.shape == (52,)
    # the mesh's five points agree with the detector's on a real face
    assert np.abs(found.five - mirrored.five[[1, 0, 2, 4, 3]] * (-1, 1) - (image.shape[1] - 1, 0)).max() < 0.2 * \
        np.hypot(*(found.five[1] - found.five[0]))


def test_no_face_in_the_crop_falls_back_to_five_points(mesh_landmarker) -> None:
    noise = np.random.default_rng(0).integers(0, 255, (192, 192, 3), dtype=np.uint8)
    points = np.array([[70, 80], [120, 80], [95, 105], [75, 130], [115, 130]], dtype=np.float64)
    found = mesh_landmarker(noise, np.array([[1.0, 0, 0], [0, 1.0, 0]]), points)
    assert found.source == "five_points" and not found.dense
    assert found.pose is None and found.blendshapes is None and np.array_equal(found.five, points)


def test_five_point_kind_returns_the_detectors_points() -> None:
    points = np.arange(10, dtype=np.float64).reshape(5, 2)
    with LANDMARKERS.get("retinaface")() as landmarker:
        found = landmarker(np.zeros((8, 8, 3), np.uint8), np.eye(2, 3), points)
    assert found.source == "five_points" and np.array_equal(found.points, points)


def jitter(image: np.ndarray, detector: FaceDetector, landmarker, dense: bool) -> float:
    """RMS wobble (aligned px) of the aligned face's corners over sub-pixel shifts of a still face.

    Each shift (dx, dy) is undone before comparing: a steady alignment moves exactly with the
    image, so what is left is the landmarks' noise.
    """
    h, w = image.shape[:2]
    corners = np.array([[0, 0], [FACE - 1, 0], [0, FACE - 1], [FACE - 1, FACE - 1]], dtype=np.float64)
    placed = []
    for k in range(8):
        dx, dy = 0.125 * k, 0.07 * k
        moved = cv2.warpAffine(image, np.array([[1, 0, dx], [0, 1, dy]], np.float64), (w, h),
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)  # fmt: skip
        found, _ = landmark(moved, detector, landmarker)
        assert found.dense == dense
        m = found.matrix(FACE)
        placed.append(transform_points(corners, invert_affine(m)) - (dx, dy))  # back in the unmoved frame
    placed_arr = np.array(placed)
    scale = matrix_scale(m)  # frame px -> aligned px
    return float(np.sqrt(((placed_arr - placed_arr.mean(0)) ** 2).sum(-1).mean()) * scale)


@pytest.mark.parametrize("image", PORTRAITS[:2])
def test_dense_alignment_wobbles_less_than_five_points(image: np.ndarray, detector: FaceDetector,
                                                        mesh_landmarker) -> None:  # fmt: skip
    with LANDMARKERS.get("retinaface")() as five:
        five_jitter = jitter(image, detector, five, dense=False)
    dense_jitter = jitter(image, detector, mesh_landmarker, dense=True)
    print(f"alignment jitter: dense {dense_jitter:.3f} px, five points {five_jitter:.3f} px (aligned px at {FACE})")
    assert dense_jitter < five_jitter
