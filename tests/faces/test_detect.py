"""facedag.faces.detect: the real RetinaFace on real portraits, policies, tracking and following."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from facedag.faces.detect import (
    Detection,
    FaceDetector,
    FaceFollower,
    IoUTracker,
    batched,
    detect_providers,
    iou,
    pick_faces,
    prefetch,
)


def _rgb(path: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage.data import astronaut

    return np.ascontiguousarray(astronaut())


@pytest.fixture(scope="module")
def grace() -> np.ndarray:
    from matplotlib.cbook import get_sample_data

    return _rgb(str(get_sample_data("grace_hopper.jpg", asfileobj=False)))


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(score_threshold=0.8, min_size=20, max_side=4096)


def det(x0: float, y0: float, x1: float, y1: float, score: float = 0.99) -> Detection:
    lm = np.array([[x0 + 0.3 * (x1 - x0), y0 + 0.4 * (y1 - y0)], [x0 + 0.7 * (x1 - x0), y0 + 0.4 * (y1 - y0)],
                   [x0 + 0.5 * (x1 - x0), y0 + 0.6 * (y1 - y0)], [x0 + 0.35 * (x1 - x0), y0 + 0.8 * (y1 - y0)],
                   [x0 + 0.65 * (x1 - x0), y0 + 0.8 * (y1 - y0)]], dtype=np.float32)  # fmt: skip
    return Detection((x0, y0, x1, y1), score, lm)


def test_preprocessing_matches_the_package() -> None:
    from retinaface.preprocess import MEAN, preprocess

    x = np.random.default_rng(0).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    blob = cv2.dnn.blobFromImages(list(x), 1.0, (64, 48), tuple(float(v) for v in MEAN), swapRB=True)
    np.testing.assert_array_equal(blob, preprocess(x))


@pytest.mark.parametrize("name", ["astronaut", "grace"])
def test_one_face_with_float_landmarks(name: str, request: pytest.FixtureRequest, detector: FaceDetector) -> None:
    import retinaface

    image = request.getfixturevalue(name)
    faces = detector.detect(image)
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.95
    assert face.landmarks.shape == (5, 2) and face.landmarks.dtype == np.float32
    assert not np.allclose(face.landmarks, np.round(face.landmarks))  # sub-pixel, not truncated
    x0, y0, x1, y1 = face.bbox
    assert (face.landmarks[:, 0] > x0).all() and (face.landmarks[:, 0] < x1).all()
    assert (face.landmarks[:, 1] > y0).all() and (face.landmarks[:, 1] < y1).all()
    assert face.landmarks[0, 0] < face.landmarks[1, 0]  # image-left eye first
    assert face.landmarks[2, 1] > face.landmarks[0, 1] and face.landmarks[3, 1] > face.landmarks[2, 1]
    # the package's own result is ours truncated to int
    ref = retinaface.detect_faces(image, score_threshold=0.8)[0]
    ref_lm = np.array([(p.x, p.y) for p in ref.landmarks], dtype=np.float32)
    np.testing.assert_array_equal(ref_lm, np.trunc(face.landmarks))
    assert abs(ref.score - face.score) < 1e-6


def test_batch_equals_single(astronaut: np.ndarray, grace: np.ndarray) -> None:
    d = FaceDetector(max_side=512, max_batch=2)  # 3 frames: one batch of 2 and one of 1
    a = cv2.resize(astronaut, (512, 512))
    g = cv2.resize(grace, (512, 512))
    frames = [a, g, np.ascontiguousarray(a[:, ::-1]), cv2.resize(grace, (320, 376))]
    batch = d.detect_batch(frames)
    for frame, got in zip(frames, batch, strict=True):
        single = d.detect(frame)
        assert len(got) == len(single) == 1
        np.testing.assert_allclose(got[0].bbox, single[0].bbox, atol=1e-3)
        np.testing.assert_allclose(got[0].landmarks, single[0].landmarks, atol=1e-3)
        assert abs(got[0].score - single[0].score) < 1e-5


def test_downscaled_detection_maps_back_to_frame_px(astronaut: np.ndarray, detector: FaceDetector) -> None:
    full = detector.detect(astronaut)[0]
    small = FaceDetector(max_side=256, min_size=20)
    assert small.input_size(512, 512) == (256, 256)
    face = small.detect(astronaut)[0]
    assert iou(face.bbox, full.bbox) > 0.8
    assert np.abs(face.landmarks - full.landmarks).max() < 0.1 * full.size


def test_thresholds_and_inputs(grace: np.ndarray) -> None:
    face = FaceDetector(max_side=640).detect(grace)[0]
    assert FaceDetector(max_side=640, min_size=face.size + 1).detect(grace) == []
    assert FaceDetector(max_side=640, score_threshold=min(0.9999, face.score + 1e-4)).detect(grace) == []
    gray = cv2.cvtColor(grace, cv2.COLOR_RGB2GRAY)
    assert len(FaceDetector(max_side=640).detect(gray)) == 1
    blank = np.full((240, 320, 3), 128, np.uint8)
    noise = np.random.default_rng(1).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    assert FaceDetector().detect_batch([blank, noise]) == [[], []]
    odd = cv2.resize(grace, (301, 353))  # not a multiple of 32: padded
    assert len(FaceDetector().detect(odd)) == 1


def test_pick_faces_policies() -> None:
    big_corner = det(0, 0, 100, 120)
    small_center = det(140, 100, 180, 140)
    faces = [small_center, big_corner]
    shape = (240, 320, 3)
    assert pick_faces(faces, shape, "largest") == [big_corner]
    assert pick_faces(faces, shape, "center") == [small_center]
    assert pick_faces(faces, shape, "all") == faces
    assert pick_faces([], shape, "largest") == []
    with pytest.raises(ValueError):
        pick_faces(faces, shape, "biggest")


def test_tracker_keeps_ids_and_tolerates_gaps() -> None:
    tr = IoUTracker(iou_threshold=0.3, max_gap=3)  # frames (no times given): 2 missed frames are fine
    ids = [tr.update([det(10 + 3 * i, 10, 60 + 3 * i, 70), det(200 - 2 * i, 50, 250 - 2 * i, 110)]) for i in range(10)]
    assert all(i == ids[0] for i in ids) and ids[0][0] != ids[0][1]
    a, b = ids[0]
    # b vanishes for 2 frames (a gap the tracker tolerates), then comes back: same id
    tr.update([det(40, 10, 90, 70)])
    tr.update([det(43, 10, 93, 70)])
    assert tr.update([det(46, 10, 96, 70), det(180, 50, 230, 110)]) == [a, b]
    # a vanishes for 3 frames (> max_gap): a new id when it returns
    for _ in range(3):
        tr.update([det(180, 50, 230, 110)])
    new = tr.update([det(46, 10, 96, 70), det(180, 50, 230, 110)])
    assert new[1] == b and new[0] not in (a, b)
    # the order of detections in a frame does not change the assignment
    assert tr.update([det(180, 50, 230, 110), det(46, 10, 96, 70)]) == [b, new[0]]
    tr.reset()
    assert tr.update([det(46, 10, 96, 70)])[0] > new[0]  # ids are never reused


def test_tracker_in_seconds_and_fast_motion() -> None:
    """Times in seconds (as the stage passes them) and a face that moves further than its IoU allows."""
    tr = IoUTracker(iou_threshold=0.3, max_gap=0.5)
    a = tr.update([det(100, 100, 160, 170)], t=0.0)[0]
    # sampled at 3 fps, the face moved 25 px: IoU < 0.3, but it is the same face
    moved = det(130, 106, 190, 176)
    assert iou((100, 100, 160, 170), moved.bbox) < 0.3
    assert tr.update([moved], t=1 / 3) == [a]
    # a face twice the size at the same place is someone else (nearer the camera)
    assert tr.update([det(95, 70, 215, 210)], t=2 / 3) != [a]
    assert tr.alive(a)  # last seen at 1/3 s, now 2/3 s: within 0.5 s
    tr.update([], t=0.9)
    assert not tr.alive(a)
    assert tr.update([moved], t=1.0) != [a]  # gone for more than 0.5 s: a new track


def test_follower_sticks_to_the_followed_person() -> None:
    f = FaceFollower("largest", iou_threshold=0.3, max_gap=3)
    shape = (240, 320, 3)
    first = f.update([det(20, 20, 100, 110)], shape)
    assert len(first) == 1
    me = first[0][1]
    # someone larger walks in: the followed face is still visible, so it stays chosen
    for i in range(4):
        out = f.update([det(200 - 10 * i, 40, 300 - 10 * i, 160), det(22 + i, 20, 102 + i, 110)], shape)
        assert [t for _, t in out] == [me]
    # the followed face is missed for two frames (within the gap): nothing, not the other person
    assert f.update([det(150, 40, 250, 160)], shape) == []
    assert f.update([det(150, 40, 250, 160)], shape) == []
    # it comes back: followed again
    assert [t for _, t in f.update([det(26, 20, 106, 110), det(150, 40, 250, 160)], shape)] == [me]
    # it is gone for longer than the gap: the policy's pick is followed from then on
    outs = [f.update([det(150, 40, 250, 160)], shape) for _ in range(5)]
    assert outs[:3] == [[], [], []]
    other = outs[-1][0][1]
    assert other != me and all(o and o[0][1] == other for o in outs[3:])
    f.reset()
    assert f.update([], shape) == []
    everyone = FaceFollower("all")
    assert len(everyone.update([det(0, 0, 50, 50), det(100, 100, 150, 150)], shape)) == 2
    assert len(f.kept_tracks) == 2 and len(everyone.kept_tracks) == 2


def test_follower_refinds_its_face_after_a_jump() -> None:
    """Rule 3: while the followed face is missing, a face on a track that starts in this very
    frame is taken as the followed one re-found; faces on older tracks never are."""
    f = FaceFollower("largest", max_gap=5)
    shape = (480, 640, 3)
    me = f.update([det(100, 100, 180, 190), det(400, 100, 460, 170)], shape)[0][1]
    # the followed face jumps (no overlap, far away), the other person stays: the jumped face
    # starts a new track and is the largest, so it is followed
    out = f.update([det(250, 200, 330, 290), det(402, 100, 462, 170)], shape)
    assert len(out) == 1 and out[0][1] != me and out[0][0].bbox == (250, 200, 330, 290)
    # only the other (older) person is visible: nothing
    assert f.update([det(404, 100, 464, 170)], shape) == []


def test_follower_on_real_faces(astronaut: np.ndarray, grace: np.ndarray) -> None:
    """Two real faces: with `largest`, the face followed first stays followed when a larger one walks in."""
    d = FaceDetector(max_side=640)
    f = FaceFollower("largest", max_gap=3)
    small_a = cv2.resize(astronaut, (320, 320))
    big_g = cv2.resize(grace, (250, 293))
    tracks = set()
    for i in range(6):
        frame = np.full((480, 640, 3), 200, np.uint8)
        frame[80 + 2 * i : 400 + 2 * i, 40 + 3 * i : 360 + 3 * i] = small_a
        if i >= 2:  # grace slides in from the right edge, never covering the astronaut
            x = 640 - 60 * (i - 1)
            frame[120:413, x:640] = big_g[:, : 640 - x]
        faces = d.detect(frame)
        if i >= 4:
            assert len(faces) == 2 and pick_faces(faces, frame.shape, "largest")[0].center[0] > 380
        out = f.update(faces, frame.shape)
        assert len(out) == 1
        tracks.add(out[0][1])
        assert out[0][0].center[0] < 300  # the astronaut, not grace
    assert len(tracks) == 1


def test_batched_and_prefetch() -> None:
    assert list(batched(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(prefetch(iter(range(100)), depth=3)) == list(range(100))

    def boom():
        yield 1
        raise RuntimeError("decode failed")

    got = []
    with pytest.raises(RuntimeError, match="decode failed"):
        for item in prefetch(boom()):
            got.append(item)
    assert got == [1]
    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    gen = prefetch(endless(), depth=2)
    assert [next(gen) for _ in range(5)] == [0, 1, 2, 3, 4]
    gen.close()
    assert closed.wait(2.0)


def test_detection_takes_cuda_where_the_install_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort

    monkeypatch.delenv("FACEDAG_DETECT_CPU", raising=False)
    assert detect_providers(["CUDAExecutionProvider", "CPUExecutionProvider"])[0] == "CUDAExecutionProvider"
    assert detect_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    # this install (plain onnxruntime): the detector's session runs on the CPU
    assert FaceDetector(threads=1)._session.get_providers()[0] == detect_providers(ort.get_available_providers())[0]
    monkeypatch.setenv("FACEDAG_DETECT_CPU", "1")
    assert detect_providers(["CUDAExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
