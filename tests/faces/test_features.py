"""facedag.faces.features: pose signs (synthetic projections, flipped real images), lighting,
sharpness and the expression proxies."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from facedag.faces import align as A
from facedag.faces import features as F
from facedag.faces.detect import FaceDetector

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "samples"
FLIP_ORDER = [1, 0, 2, 4, 3]  # a mirror image swaps image-left and image-right points


def rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def project(yaw: float, pitch: float, shape=(480, 640), at=(320.0, 240.0), distance=600.0) -> np.ndarray:
    """The 5 model points of a head turned by (yaw, pitch) degrees in our convention, in frame px."""
    rot = rot_y(-math.radians(yaw)) @ rot_x(-math.radians(pitch))
    cam = F.camera_matrix(shape)
    t = np.array([(at[0] - cam[0, 2]) * distance / cam[0, 0], (at[1] - cam[1, 2]) * distance / cam[1, 1], distance])
    p = (F.MODEL_3D @ rot.T + t) @ cam.T
    return (p[:, :2] / p[:, 2:]).astype(np.float32)


def flip_landmarks(lm: np.ndarray, width: int) -> np.ndarray:
    out = np.asarray(lm, dtype=np.float64).copy()
    out[:, 0] = (width - 1) - out[:, 0]
    return out[FLIP_ORDER]


@pytest.mark.parametrize(("yaw", "pitch"), [(0, 0), (25, 0), (-25, 0), (0, 20), (0, -20), (30, 15), (-40, -10)])
def test_pose_of_synthetic_heads(yaw: float, pitch: float) -> None:
    y, p, r = F.head_pose(project(yaw, pitch), (480, 640))
    assert y == pytest.approx(yaw, abs=1.0)
    assert p == pytest.approx(pitch, abs=1.0)
    assert abs(r) < 5.0  # roll is read from the eye line: perspective tilts it a little on a turned head


def test_pose_signs_by_name() -> None:
    """yaw > 0: the nose points to the image right; pitch > 0: looking up; roll > 0: clockwise."""
    right = project(30, 0)
    assert right[2, 0] > (right[0, 0] + right[1, 0]) / 2  # the nose is right of the eyes' midpoint
    assert F.head_pose(right, (480, 640))[0] > 20
    up = project(0, 20)
    front = project(0, 0)
    nose_frac = lambda lm: (lm[2, 1] - lm[0, 1]) / (lm[3, 1] - lm[0, 1])  # noqa: E731
    assert nose_frac(up) < nose_frac(front)  # looking up, the nose tip rises toward the eyes
    assert F.head_pose(up, (480, 640))[1] > 10
    tilted = A.transform_points(front, cv2.getRotationMatrix2D((320, 240), -15, 1.0))  # clockwise on screen
    assert tilted[1, 1] > tilted[0, 1]
    assert F.head_pose(tilted, (480, 640))[2] == pytest.approx(15, abs=0.5)


@pytest.mark.parametrize(("yaw", "pitch", "at"), [(25, 10, (200, 300)), (-35, -15, (500, 100)), (5, 0, (320, 240))])
def test_mirrored_landmarks_negate_yaw_and_roll(yaw: float, pitch: float, at: tuple[float, float]) -> None:
    lm = A.transform_points(project(yaw, pitch, at=at), cv2.getRotationMatrix2D(at, 8, 1.0))
    y, p, r = F.head_pose(lm, (480, 640))
    yf, pf, rf = F.head_pose(flip_landmarks(lm, 640), (480, 640))
    assert yf == pytest.approx(-y, abs=1e-3)
    assert pf == pytest.approx(p, abs=1e-3)
    assert rf == pytest.approx(-r, abs=1e-6)


def _portraits() -> list[tuple[str, np.ndarray]]:
    from matplotlib.cbook import get_sample_data
    from skimage.data import astronaut

    grace = cv2.cvtColor(cv2.imread(str(get_sample_data("grace_hopper.jpg", asfileobj=False))), cv2.COLOR_BGR2RGB)
    return [("astronaut", np.ascontiguousarray(astronaut())), ("grace_hopper", grace)]


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(min_size=20, max_side=1024)


@pytest.mark.parametrize("index", [0, 1])
def test_pose_on_flipped_real_images(index: int, detector: FaceDetector) -> None:
    """Real portraits, flipped: the detector runs again on the mirror image, so agreement is up
    to its noise; roll (by the eye line) flips sign, rotated copies have the roll we applied."""
    _, image = _portraits()[index]
    h, w = image.shape[:2]
    lm = detector.detect(image)[0].landmarks
    flipped = np.ascontiguousarray(image[:, ::-1])
    lmf = detector.detect(flipped)[0].landmarks
    y, p, r = F.head_pose(lm, image.shape)
    yf, pf, rf = F.head_pose(lmf, flipped.shape)
    assert abs(y + yf) < 8 and abs(r + rf) < 5 and abs(p - pf) < 20
    # exactly mirrored landmarks: exact signs
    ym, pm, rm = F.head_pose(flip_landmarks(lm, w), image.shape)
    assert (ym, pm, rm) == pytest.approx((-y, p, -r), abs=1e-3)
    for angle in (-20, 20):  # cv2 angle > 0 is counter-clockwise on screen: roll -angle
        rot = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        turned = cv2.warpAffine(image, rot, (w, h), borderMode=cv2.BORDER_REFLECT)
        rt = F.head_pose(detector.detect(turned)[0].landmarks, turned.shape)[2]
        assert rt == pytest.approx(r - angle, abs=5)


@pytest.mark.skipif(not (SAMPLES / "video_02.mp4").exists(), reason="../shared/samples/video_02.mp4 is absent")
def test_yaw_sign_on_a_turned_real_face(detector: FaceDetector) -> None:
    """video_02 around 6.6 s: a hiker's face turned toward the image right; flipped, toward the left."""
    from facedag.sources.media import iter_frames

    yaws, yaws_flipped = [], []
    for frame in iter_frames(SAMPLES / "video_02.mp4", start=6.5, end=6.7):
        img = frame.image
        faces = detector.detect(img)
        big = max(faces, key=lambda d: d.area)
        yaws.append(F.head_pose(big.landmarks, img.shape)[0])
        flipped = np.ascontiguousarray(img[:, ::-1])
        bigf = max(detector.detect(flipped), key=lambda d: d.area)
        yaws_flipped.append(F.head_pose(bigf.landmarks, img.shape)[0])
    assert yaws and np.median(yaws) > 10 and np.median(yaws_flipped) < -10


def test_lighting_on_synthetic_faces() -> None:
    size = 128
    flat = np.full((size, size, 3), 128, np.uint8)
    light = F.lighting(flat)
    assert light["luminance"] == pytest.approx(128 / 255, abs=0.01)
    assert light["asymmetry"] == pytest.approx(0, abs=1e-6) and light["contrast"] == pytest.approx(0, abs=1e-6)
    ramp = np.repeat(np.linspace(220, 40, size, dtype=np.float32)[None, :, None], size, 0).repeat(3, 2)
    lit_left = F.lighting(ramp.astype(np.uint8))
    assert lit_left["asymmetry"] > 0.2 and lit_left["contrast"] > 0.05
    assert F.lighting(np.ascontiguousarray(ramp[:, ::-1]).astype(np.uint8))["asymmetry"] < -0.2
    warm = F.lighting(np.full((size, size, 3), (200, 140, 90), np.uint8))
    cool = F.lighting(np.full((size, size, 3), (150, 160, 210), np.uint8))
    assert warm["warmth"] > 0.2 > -0.1 > cool["warmth"]
    assert warm["cct"] < 4000 < 6500 < cool["cct"]


@pytest.fixture(scope="module")
def aligned_astronaut(detector: FaceDetector) -> np.ndarray:
    _, image = _portraits()[0]
    face = detector.detect(image)[0]
    return A.align_face(image, A.aligned_matrix(face.landmarks, 128), 128)


def test_sharpness_drops_with_blur(aligned_astronaut: np.ndarray) -> None:
    sharp = F.sharpness(aligned_astronaut)
    soft = F.sharpness(cv2.GaussianBlur(aligned_astronaut, (0, 0), 2.0))
    assert sharp > 3 * soft > 0


def test_expression_proxies(aligned_astronaut: np.ndarray) -> None:
    base = F.expression(aligned_astronaut)
    assert 0 <= base["mouth_open"] <= 1 and 0 <= base["eyes_open"] <= 1.5
    t = A.template(128)
    mouth_open = aligned_astronaut.copy()
    centre = (round(float(t[3, 0] + t[4, 0]) / 2), round(float(t[3, 1] + t[4, 1]) / 2) + 2)
    cv2.ellipse(mouth_open, centre, (9, 7), 0, 0, 360, (25, 10, 10), -1)
    assert F.expression(mouth_open)["mouth_open"] > base["mouth_open"] + 0.3
    closed = aligned_astronaut.copy()
    skin = tuple(int(v) for v in np.median(aligned_astronaut[80:90, 55:75].reshape(-1, 3), axis=0))
    for x, y in t[:2]:
        cv2.ellipse(closed, (round(float(x)), round(float(y))), (10, 6), 0, 0, 360, skin, -1)
    assert F.expression(closed)["eyes_open"] < 0.5 * base["eyes_open"]
    feats = F.face_features(aligned_astronaut)
    assert set(feats) == {"luminance", "asymmetry", "contrast", "warmth", "cct", "sharpness", "mouth_open", "eyes_open"}
    assert all(math.isfinite(v) for v in feats.values())
