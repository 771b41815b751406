"""facedag.faces.align: the template, Umeyama, and warps that round-trip on real faces."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from facedag.faces import align as A
from facedag.faces.detect import FaceDetector

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "samples"


def _portraits() -> list:
    from matplotlib.cbook import get_sample_data
    from skimage.data import astronaut

    grace = cv2.cvtColor(cv2.imread(str(get_sample_data("grace_hopper.jpg", asfileobj=False))), cv2.COLOR_BGR2RGB)
    out = [pytest.param(np.ascontiguousarray(astronaut()), id="astronaut"), pytest.param(grace, id="grace_hopper")]
    person = SAMPLES / "person_cropped_2.png"
    if person.exists():
        img = cv2.cvtColor(cv2.imread(str(person), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        out.append(pytest.param(img, id="person_cropped_2"))
    return out


PORTRAITS = _portraits()


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(min_size=20, max_side=4096)


def rotation_matrix(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = math.radians(angle_deg)
    return np.array([[scale * math.cos(a), -scale * math.sin(a), tx], [scale * math.sin(a), scale * math.cos(a), ty]])


def test_template_is_a_whole_face_layout() -> None:
    for size in (64, 128, 256):
        t = A.template(size)
        assert t.shape == (5, 2)
        assert (t > 0).all() and (t < size).all()
        assert abs(t[0, 1] - t[1, 1]) < 0.01 * size  # eyes level
        assert abs((t[0, 0] + t[1, 0]) / 2 - (size - 1) / 2) < 0.01 * size  # centred
        eye_d = (t[1, 0] - t[0, 0]) / size
        assert 0.2 < eye_d < 0.27  # whole face: narrower than ArcFace's 0.31
        assert 0.38 < (t[0, 1] + 0.5) / size < 0.48 and 0.66 < (t[3, 1] + 0.5) / size < 0.76
    np.testing.assert_allclose((A.template(256) + 0.5) / 256, (A.template(64) + 0.5) / 64)


def test_similarity_recovers_a_known_transform() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 300, (5, 2))
    for angle, scale in ((0, 1), (30, 0.5), (-170, 2.5), (90, 0.01)):
        m = rotation_matrix(angle, scale, 12.5, -40.0)
        got = A.similarity_matrix(src, A.transform_points(src, m))
        np.testing.assert_allclose(got, m, atol=1e-9 * max(1, scale) * 300)
        assert A.matrix_scale(got) == pytest.approx(scale)
        assert A.roll_degrees(got) == pytest.approx(angle)


def test_similarity_never_reflects_and_rejects_degenerate() -> None:
    src = A.template(128)
    mirrored = src.copy()
    mirrored[:, 0] = 127 - mirrored[:, 0]
    m = A.similarity_matrix(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0
    with pytest.raises(ValueError):
        A.similarity_matrix(np.zeros((5, 2)), src)
    with pytest.raises(ValueError):
        A.similarity_matrix(np.full((5, 2), np.nan), src)
    with pytest.raises(ValueError):
        A.check_landmarks(mirrored[[1, 0, 2, 4, 3]] * (1, -1))  # upside-down mirror image
    with pytest.raises(ValueError):
        A.check_landmarks(np.full((5, 2), 3.0))
    A.check_landmarks(src)
    upside_down = A.transform_points(src, rotation_matrix(180, 1, 200, 200))
    A.check_landmarks(upside_down)  # a rotation is fine, only a reflection is not


def test_invert_compose_transform_points() -> None:
    m = rotation_matrix(23, 1.7, 5, -3)
    n = rotation_matrix(-70, 0.4, 100, 20)
    p = np.random.default_rng(1).uniform(-50, 50, (10, 2))
    np.testing.assert_allclose(A.transform_points(A.transform_points(p, m), A.invert_affine(m)), p, atol=1e-9)
    np.testing.assert_allclose(
        A.transform_points(p, A.compose(n, m)), A.transform_points(A.transform_points(p, m), n), atol=1e-9
    )
    np.testing.assert_allclose(A.as_matrix(m.reshape(-1).tolist()), m)


@pytest.mark.parametrize("image", PORTRAITS)
def test_alignment_round_trip_on_real_faces(image: np.ndarray, detector: FaceDetector) -> None:
    """Warp a real face to the template, warp it back with the inverse: the detector finds the
    same landmarks within 1 px; the aligned face has its landmarks near the template."""
    face = detector.detect(image)[0]
    size = 512
    m = A.aligned_matrix(face.landmarks, size)
    # points: exact
    np.testing.assert_allclose(
        A.transform_points(A.transform_points(face.landmarks, m), A.invert_affine(m)), face.landmarks, atol=1e-6
    )
    aligned = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    h, w = image.shape[:2]
    back = cv2.warpAffine(aligned, A.invert_affine(m), (w, h), flags=cv2.INTER_CUBIC)
    inside = cv2.warpAffine(np.full((size, size), 255, np.uint8), A.invert_affine(m), (w, h))
    restored = np.where(inside[..., None] == 255, back, image)
    again = detector.detect(restored)[0]
    assert np.abs(again.landmarks - face.landmarks).max() < 1.0
    # in the aligned face, the detector's landmarks sit near the template (RetinaFace's noise,
    # and its nose/mouth proportions differ from ArcFace's, by a few % of the face)
    small = cv2.resize(aligned, (256, 256), interpolation=cv2.INTER_AREA)
    found = FaceDetector(min_size=20, max_side=4096, score_threshold=0.5).detect(small)
    assert found
    assert np.abs(found[0].landmarks - A.template(256)).max() < 0.08 * 256


@pytest.mark.parametrize("image", PORTRAITS)
def test_loose_crop_gives_the_same_aligned_face(image: np.ndarray, detector: FaceDetector) -> None:
    face = detector.detect(image)[0]
    for size in (64, 128):
        crop, cm = A.loose_crop(image, face.landmarks, size)
        assert crop.shape[0] == crop.shape[1] <= math.ceil(A.LOOSE_MARGIN * size)
        # the crop holds the landmarks where crop_matrix says
        lm_crop = A.transform_points(face.landmarks, cm)
        assert (lm_crop > 0).all() and (lm_crop < crop.shape[0]).all()
        via_crop, m = A.face_from_crop(crop, cm, face.landmarks, size)
        np.testing.assert_allclose(m, A.aligned_matrix(face.landmarks, size))
        direct = A.align_face(image, m, size)
        assert via_crop.shape == direct.shape == (size, size, 3)
        # the same face up to resampling (area-downscaled crop vs prefiltered warp): compare
        # at a scale where the two resampling paths agree
        a, b = (cv2.GaussianBlur(x, (0, 0), 1.0).astype(np.float32) for x in (via_crop, direct))
        assert np.abs(a - b).mean() < 2.0


def test_loose_crop_at_the_frame_edge_and_rotated(detector: FaceDetector) -> None:
    from skimage.data import astronaut

    image = np.ascontiguousarray(astronaut())
    face = detector.detect(image)[0]
    # shift the face half out of the frame (top-left) and roll it by 40 degrees
    r = rotation_matrix(40, 1.0, 0, 0)
    r[:, 2] = -A.transform_points(face.landmarks[2:3], r)[0] + (30, 20)
    moved = cv2.warpAffine(image, r, (512, 512))
    lm = A.transform_points(face.landmarks, r).astype(np.float32)
    crop, cm = A.loose_crop(moved, lm, 128)
    assert crop.shape[:2] == (192, 192)
    assert (crop[:20, :20] == 0).all()  # outside the frame: black
    _aligned, m = A.face_from_crop(crop, cm, lm, 128)
    assert A.roll_degrees(m) == pytest.approx(-40 + A.roll_degrees(A.aligned_matrix(face.landmarks, 128)), abs=1e-6)
    with pytest.raises(ValueError):
        A.loose_crop(image, lm + 5000, 128)
