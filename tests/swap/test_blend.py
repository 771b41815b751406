"""The blend mask, colour matching and the paste back into the frame (real cv2 geometry)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facedag.faces.align import align_face, aligned_matrix, template, transform_points
from facedag.swap.blend import colour_region, face_mask, match_colour, paste
from facedag.swap.colour import COLOUR
from facedag.swap.masks.hull import face_outline

S = 128


def test_mask_is_a_feathered_hull_zero_outside_and_one_inside():
    t = template(S)
    hard = face_mask(S, t, erode=0.0, feather=0.0)
    soft = face_mask(S, t, erode=0.02, feather=0.06)
    assert set(np.unique(hard)) <= {0.0, 1.0}
    cx, cy = t[2].round().astype(int)  # the nose tip
    assert soft[cy, cx] == pytest.approx(1.0)
    assert soft[0, 0] == 0 and soft[-1, -1] == 0 and soft[0, -1] == 0
    # the feather is inward: nothing outside the hard hull, and the soft mask is smaller
    assert not np.any(soft[hard == 0] > 0)
    assert 0 < np.count_nonzero(soft) < np.count_nonzero(hard)
    assert np.any((soft > 0) & (soft < 1))
    # it covers eyes and mouth corners and stays inside the aligned square
    for x, y in t.round().astype(int):
        assert soft[y, x] > 0.85
    more = face_mask(S, t, erode=0.08, feather=0.06)
    assert np.count_nonzero(more) < np.count_nonzero(soft)


def test_mask_follows_the_landmarks():
    t = template(S)
    turned = t.copy()
    turned[:, 0] += (6, 6, 12, 6, 6)  # the face turns toward the image right, the nose most
    outline = face_outline(turned)
    assert outline.shape[1] == 2
    m0, m1 = face_mask(S, t), face_mask(S, turned)
    cols = np.arange(S)
    centroid = lambda m: float((m.sum(0) * cols).sum() / m.sum())  # noqa: E731
    assert centroid(m1) > centroid(m0)
    with pytest.raises(ValueError):
        face_outline(np.zeros((5, 2)))


def _textured(mean: tuple[float, float, float], std: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (S, S, 3)).astype(np.float32), (0, 0), 2)
    noise = noise / noise.std()
    return np.clip(np.array(mean, np.float32) + std * noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("mode", ["rct", "avg", "hist"])
def test_colour_matching_moves_statistics_toward_the_target(mode):
    face = _textured((200, 120, 90), 12, 0)  # warm, flat
    target = _textured((110, 130, 170), 30, 1)  # cool, contrasty
    mask = face_mask(S, template(S))
    sel = mask > 0.5
    out = match_colour(face, target, mask, mode)
    assert out.shape == face.shape and out.dtype == np.uint8
    mean = lambda a: a[sel].reshape(-1, 3).astype(np.float64).mean(0)  # noqa: E731
    std = lambda a: a[sel].reshape(-1, 3).astype(np.float64).std(0)  # noqa: E731
    before = np.abs(mean(face) - mean(target)).sum()
    after = np.abs(mean(out) - mean(target)).sum()
    assert after < 0.25 * before
    if mode == "rct":  # Reinhard matches mean and spread in L*a*b*
        lab = lambda a: cv2.cvtColor(a.astype(np.float32) / 255, cv2.COLOR_RGB2LAB)  # noqa: E731
        assert np.abs(std(lab(out)) - std(lab(target))).sum() < 0.3 * np.abs(std(lab(face)) - std(lab(target))).sum()
    if mode == "hist":
        assert np.abs(std(out) - std(target)).sum() < 0.3 * np.abs(std(face) - std(target)).sum()


@pytest.mark.parametrize("mode", ["rct", "avg"])
def test_colour_is_matched_where_the_face_is_opaque_not_on_the_feathered_rim(mode):
    """The target's rim is foliage (the hull takes in background there), the face's rim is skin:
    the opaque part must still come out the target's skin colour, not pulled toward green."""
    mask = face_mask(S, template(S), erode=0.02, feather=0.1)
    opaque, rim = mask >= 0.98, (mask > 0) & (mask < 0.98)
    assert opaque.sum() > 100 and rim.sum() > opaque.sum() / 4
    face = _textured((200, 150, 120), 8, 0)
    target = _textured((180, 120, 100), 8, 1)
    target[rim] = (40, 140, 40)
    out = match_colour(face, target, mask, mode)
    lab = lambda a: cv2.cvtColor(a.astype(np.float32) / 255, cv2.COLOR_RGB2LAB)  # noqa: E731
    gap = np.linalg.norm(lab(out)[opaque].mean(0) - lab(target)[opaque].mean(0))
    assert gap < 0.5  # the old reading over mask > 0.5 left this face several delta E toward green
    assert np.array_equal(colour_region(mask), opaque)


def test_colour_region_falls_back_for_a_faint_mask():
    faint = np.full((S, S), 0.7, np.float32)
    assert colour_region(faint).all()
    assert not colour_region(np.full((S, S), 0.3, np.float32)).any()


def test_colour_none_and_unknown():
    face = _textured((200, 120, 90), 12, 0)
    mask = face_mask(S, template(S))
    assert match_colour(face, face[::-1], mask, "none") is face
    assert set(COLOUR.names()) == {"rct", "avg", "hist", "none"}
    with pytest.raises(ValueError):
        match_colour(face, face, mask, "lut")


def _frame() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    frame = cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), (0, 0), 3)
    landmarks = np.array([[140, 100], [180, 102], [160, 125], [145, 150], [177, 151]], np.float64)
    return frame, landmarks


def test_paste_changes_only_the_masked_region():
    frame, lm = _frame()
    m = aligned_matrix(lm, S)
    mask = face_mask(S, transform_points(lm, m))
    face = np.full((S, S, 3), (255, 0, 255), np.uint8)
    out = frame.copy()
    area, (x0, y0, x1, y1), alpha = paste(out, face, mask, m)
    full = np.zeros(frame.shape[:2], np.float32)
    full[y0:y1, x0:x1] = alpha
    assert area == np.count_nonzero(full) > 500
    assert np.array_equal(out[full == 0], frame[full == 0])
    inside = full > 0.99
    assert np.abs(out[inside].astype(int) - [255, 0, 255]).max() <= 1
    # the nose (a landmark) is inside the pasted region
    assert full[125, 160] > 0.99


def test_paste_of_the_aligned_face_itself_gives_the_frame_back():
    frame, lm = _frame()
    m = aligned_matrix(lm, S)
    mask = face_mask(S, transform_points(lm, m))
    out = frame.copy()
    paste(out, align_face(frame, m, S), mask, m)
    diff = np.abs(out.astype(int) - frame.astype(int))
    assert diff.mean() < 0.5 and np.percentile(diff, 99.9) < 12  # resampling twice, nothing more


def test_paste_outside_the_frame_is_none():
    frame, lm = _frame()
    m = aligned_matrix(lm + 5000, S)
    assert paste(frame.copy(), np.zeros((S, S, 3), np.uint8), np.ones((S, S), np.float32), m) is None
