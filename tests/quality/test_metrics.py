"""Quality measures on planted cases: neutral on an identical video, and the known value (or a
clear rise) for each planted defect: colour shift, noise, mask jitter, a hard paste."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from skimage.color import rgb2lab

from facedag.faces.align import align_face, aligned_matrix, transform_points
from facedag.quality.metrics import PSNR_CAP_DB, VideoQuality, landmark_error, reconstruction_metrics
from facedag.swap.blend import face_mask, paste

H, W = 96, 128
FRAMES = 12


def texture(seed: int, h: int = H + FRAMES, w: int = W + FRAMES) -> np.ndarray:
    """A skin-like float RGB image: a smooth tint plus blurred noise (std 6 levels)."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (h, w, 3)).astype(np.float32), (0, 0), 2.0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([170 + 0.2 * xx, 120 + 0.1 * yy, 100 + 0 * xx], -1)
    return base + 6 * noise / noise.std()


def to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(x) + 0.5, 0, 255).astype(np.uint8)


def target_frame(t: int, tex: np.ndarray) -> np.ndarray:
    """Frame t of a camera panning 1 px per frame over `tex` (so the target itself changes)."""
    return to_u8(tex[t : t + H, t : t + W])


def ellipse_mask(cx: float, cy: float, rx: float = 22, ry: float = 28, feather: int = 0) -> np.ndarray:
    """Frame-sized float32 mask: a hard ellipse, or (feather > 0) one feathered inward, as blend's."""
    canvas = np.zeros((H, W), np.float32)
    s = 16  # 4 fractional bits: sub-pixel centres, so a mask can move by less than a pixel
    axes = (round((rx - feather) * s), round((ry - feather) * s))
    cv2.ellipse(canvas, (round(cx * s), round(cy * s)), axes, 0, 0, 360, 1.0, -1, cv2.LINE_8, 4)
    if feather:
        canvas = cv2.GaussianBlur(canvas, (2 * feather + 1, 2 * feather + 1), feather / 2.0,
                                  borderType=cv2.BORDER_CONSTANT)  # fmt: skip
    canvas[canvas < 1.0 / 512] = 0.0
    return canvas


def blend(target: np.ndarray, face: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """convert's paste: target + mask * (face - target), rounded to uint8."""
    return to_u8(target + mask[..., None] * (face.astype(np.float32) - target))


def path(t: int) -> tuple[float, float]:
    """A smoothly moving face centre."""
    return 50 + 1.5 * t, 46 + 0.5 * t


def run(frames: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]) -> dict:
    vq = VideoQuality()
    for tgt, out, mask in frames:
        vq.add(tgt, out, mask)
    return vq.result()


# -- the converted video --------------------------------------------------------------------------


def test_identical_video_is_neutral() -> None:
    tex = texture(0)
    lm = np.array([[40, 50], [80, 50], [60, 70], [45, 90], [75, 90]], np.float32)
    vq = VideoQuality()
    for t in range(FRAMES):
        tgt = target_frame(t, tex)
        row = vq.add(tgt, tgt.copy(), ellipse_mask(*path(t), feather=5), lm, lm.copy(), True)
        if t:
            assert row["flicker_output"] == row["flicker_target"] > 0
        assert row["seam"] == 0.0 and row["colour_gap"] == 0.0
    r = vq.result()
    assert r["frames"] == r["frames_swapped"] == FRAMES and r["flicker_pairs"] == FRAMES - 1
    assert r["flicker"] == pytest.approx(1.0, abs=1e-6)
    assert r["flicker_target"] > 1.0  # the target does change: the ratio is not 0/0
    assert r["seam"] == 0.0 and r["seam_excess"] == 0.0
    assert r["colour_gap"] == 0.0 and r["colour_gap_target"] > 0  # the face differs from its ring, unpenalised
    assert r["landmark_error"] == 0.0 and r["detect_rate"] == 1.0


def test_only_the_face_and_its_ring_are_looked_at() -> None:
    """Changes far from the mask (here: the frame's corner) leave every figure neutral."""
    tex = texture(1)
    frames = []
    for t in range(6):
        tgt = target_frame(t, tex)
        out = tgt.copy()
        out[:12, :12] = 255 - out[:12, :12]
        frames.append((tgt, out, ellipse_mask(*path(t))))
    r = run(frames)
    assert r["flicker"] == 1.0 and r["seam"] == 0.0 and r["colour_gap"] == 0.0


def test_a_face_cut_by_the_frame_border() -> None:
    """A face half out of frame: the frame border is no seam, an identical video stays neutral."""
    tex = texture(2)
    frames = [(target_frame(t, tex), target_frame(t, tex), ellipse_mask(8 + t, 40, feather=3)) for t in range(4)]
    r = run(frames)
    assert r["flicker"] == 1.0 and r["seam"] == 0.0 and r["colour_gap"] == 0.0


def lab(rgb: tuple[int, int, int]) -> np.ndarray:
    """CIE LAB (D65) by scikit-image: independent of the cv2 conversion under test."""
    return rgb2lab(np.array([[rgb]], np.float64) / 255.0)[0, 0]


@pytest.mark.parametrize(
    "skin,face,channel,delta",
    [
        ((150, 100, 80), (200, 150, 120), 0, 10),
        ((150, 100, 80), (200, 150, 120), 1, -10),
        ((150, 100, 80), (200, 150, 120), 2, 10),
        ((30, 22, 18), (12, 8, 6), 0, 12),  # near black: CIE f's linear toe
    ],
)
def test_colour_shift_gives_its_lab_distance(
    skin: tuple[int, int, int], face: tuple[int, int, int], channel: int, delta: int
) -> None:
    shifted = list(face)
    shifted[channel] += delta
    frames = []
    for t in range(3):
        mask = ellipse_mask(*path(t))
        inside = mask > 0
        tgt = np.empty((H, W, 3), np.uint8)
        tgt[...] = skin
        tgt[inside] = face  # the target's own face differs from its ring: that gap is not the swap's
        out = tgt.copy()
        out[inside] = shifted
        frames.append((tgt, out, mask))
    r = run(frames)
    expected = float(np.linalg.norm(lab(tuple(shifted)) - lab(face)))
    assert expected > 2.3  # visible: above the JND
    assert r["colour_gap"] == pytest.approx(expected, abs=0.05)
    assert r["colour_gap_target"] == pytest.approx(float(np.linalg.norm(lab(face) - lab(skin))), abs=0.05)


def test_flicker_is_change_over_time_not_difference() -> None:
    """A face inverted in colour but changing exactly as much as the original: flicker 1 exactly."""
    tex = texture(16)
    frames = []
    mask = ellipse_mask(60, 48)
    inside = mask > 0
    for t in range(6):
        tgt = target_frame(t, tex)
        out = tgt.copy()
        out[inside] = 255 - tgt[inside]  # |out_t - out_t-1| == |tgt_t - tgt_t-1| at every pixel
        frames.append((tgt, out, mask))
    r = run(frames)
    assert r["flicker"] == 1.0 and r["flicker_target"] > 0
    assert r["colour_gap"] > 50


def test_flicker_counts_the_pixels_either_mask_touched() -> None:
    """A static target; a +40 face pasted at A, then at B: the output changes by 40 exactly on
    A xor B, so the mean change over the union is 40 |A xor B| / |A u B| (an intersection, or the
    current mask alone, would miss the pixels the face left)."""
    tgt = np.full((H, W, 3), 120, np.uint8)
    a, b = ellipse_mask(50, 48), ellipse_mask(62, 48)
    frames = [(tgt, blend(tgt, tgt + 40, mask), mask) for mask in (a, b)]
    r = run(frames)
    in_a, in_b = a > 0, b > 0
    assert r["flicker_output"] == pytest.approx(40 * np.sum(in_a ^ in_b) / np.sum(in_a | in_b), rel=1e-12)
    assert r["flicker_target"] == 0.0 and r["flicker"] is None  # a still target: no ratio to take


def test_noise_inside_the_mask_raises_flicker() -> None:
    tex = texture(3)
    rng = np.random.default_rng(7)
    frames = []
    for t in range(FRAMES):
        tgt = target_frame(t, tex)
        mask = ellipse_mask(*path(t), feather=4)
        noisy = tgt.astype(np.float32) + rng.normal(0, 4, tgt.shape).astype(np.float32)
        frames.append((tgt, blend(tgt, noisy, mask), mask))
    r = run(frames)
    assert r["flicker"] > 1.3


def test_mask_jitter_raises_flicker() -> None:
    """A different face pasted along the same path: a steady mask vs one that jumps +-3 px."""
    tex, other = texture(4), texture(5)
    rng = np.random.default_rng(8)

    def video(jitter: float) -> dict:
        frames = []
        for t in range(FRAMES):
            tgt = target_frame(t, tex)
            src = target_frame(t, other + 25)  # the swapped face: its own texture, lit brighter
            cx, cy = path(t)
            mask = ellipse_mask(cx + jitter * rng.uniform(-1, 1), cy + jitter * rng.uniform(-1, 1), feather=4)
            frames.append((tgt, blend(tgt, src, mask), mask))
        return run(frames)

    steady, jittered = video(0.0), video(3.0)
    assert jittered["flicker"] > steady["flicker"] + 0.3


def test_a_frame_without_face_breaks_the_chain() -> None:
    tex = texture(6)
    frames = []
    for t in range(10):
        tgt = target_frame(t, tex)
        mask = None if t == 5 else ellipse_mask(*path(t))
        if t == 7:
            mask = np.zeros((H, W), np.float32)  # an all-zero mask is no swap either
        frames.append((tgt, tgt.copy(), mask))
    r = run(frames)
    assert r["frames"] == 10 and r["frames_swapped"] == 8
    assert r["flicker_pairs"] == 4 + 0 + 1  # 0-4, 6 alone, 8-9


def test_a_scene_cut_breaks_the_flicker_chain() -> None:
    """Across a cut both videos change completely; counted, that pair pulls the ratio of a noisy
    swap toward 1. With the cut detected, the figure equals that of the same frames with the
    chain broken by a frame without a face."""
    bright, dark = texture(10), texture(11) * 0.4
    rng = np.random.default_rng(12)
    frames = []
    for t in range(FRAMES):
        tgt = target_frame(t, bright if t < FRAMES // 2 else dark)
        mask = ellipse_mask(*path(t), feather=4)
        noisy = tgt.astype(np.float32) + rng.normal(0, 4, tgt.shape).astype(np.float32)
        frames.append((tgt, blend(tgt, noisy, mask), mask))
    r = run(frames)
    assert r["flicker_cuts"] == 1 and r["flicker_pairs"] == FRAMES - 2
    broken = run([*frames[: FRAMES // 2], (frames[0][0], frames[0][0], None), *frames[FRAMES // 2 :]])
    assert broken["flicker_cuts"] == 0 and r["flicker"] == broken["flicker"] > 1.3


def test_a_hard_paste_shows_a_seam_and_feathering_softens_it() -> None:
    tex = texture(9)

    def video(feather: int) -> dict:
        frames = []
        for t in range(6):
            tgt = target_frame(t, tex)
            mask = ellipse_mask(*path(t), feather=feather)
            frames.append((tgt, blend(tgt, tgt.astype(np.float32) + 30, mask), mask))  # a brighter face
        return run(frames)

    hard, soft = video(0), video(6)
    assert hard["seam"] > 1.0  # a 30-level step across the edge: far above the skin's gradient
    assert 0 < soft["seam"] < 0.5 * hard["seam"]


def test_blend_feather_lowers_the_seam_of_a_real_paste() -> None:
    """convert's own mask and paste: a brighter face through blend's default feather vs none."""
    tex = texture(17)
    lm = np.array([[50, 40], [78, 41], [64, 58], [53, 74], [76, 75]], np.float64)
    size = 64

    def video(feather: float) -> dict:
        vq = VideoQuality()
        for t in range(4):
            tgt = target_frame(t, tex)
            m = aligned_matrix(lm + np.array([t, 0.5 * t]), size)
            face = align_face(tgt, m, size).astype(np.int16) + 30
            mask = face_mask(size, transform_points(lm + np.array([t, 0.5 * t]), m), feather=feather)
            out = tgt.copy()
            _, (x0, y0, x1, y1), alpha = paste(out, np.clip(face, 0, 255).astype(np.uint8), mask, m)
            full = np.zeros((H, W), np.float32)
            full[y0:y1, x0:x1] = alpha
            vq.add(tgt, out, full)
        return vq.result()

    hard, soft = video(0.0), video(0.06)
    assert hard["seam"] > 1.0 and soft["seam"] < 0.5 * hard["seam"]
    assert hard["colour_gap"] > 5 and soft["colour_gap"] > 5  # +30 levels is a visible shift either way


def test_landmark_error_is_the_shift_over_the_eye_distance() -> None:
    tgt_lm = np.array([[40, 50], [80, 50], [60, 70], [45, 90], [75, 90]], np.float64)  # eyes 40 px apart
    out_lm = tgt_lm + np.array([3.0, 4.0])  # 5 px
    assert landmark_error(out_lm, tgt_lm) == pytest.approx(5 / 40)
    assert landmark_error(out_lm, np.zeros((5, 2))) is None
    tex = texture(11)
    vq = VideoQuality()
    for t in range(4):
        tgt = target_frame(t, tex)
        shift = np.array([3.0 * t, 0.0])  # errors 0, 3, 6, 9 px
        vq.add(tgt, tgt, ellipse_mask(*path(t)), tgt_lm, tgt_lm + shift, True)
    vq.add(tgt, tgt, ellipse_mask(*path(4)), tgt_lm, tgt_lm + 100, False)  # not found: not counted
    vq.add(tgt, tgt, None, tgt_lm, tgt_lm + 100, True)  # not swapped: not counted
    r = vq.result()
    assert r["landmark_frames"] == 4
    assert r["landmark_error"] == pytest.approx((0 + 3 + 6 + 9) / 4 / 40)


def test_detect_rate_counts_swapped_frames_with_a_known_outcome() -> None:
    tex = texture(12)
    found = [True, True, False, True, None, False, True, True, True, True]
    vq = VideoQuality()
    for t, f in enumerate(found):
        tgt = target_frame(t, tex)
        vq.add(tgt, tgt, ellipse_mask(*path(t)), output_face_found=f)
    for t in range(2):
        tgt = target_frame(t, tex)
        vq.add(tgt, tgt, None, output_face_found=False)  # no swap: the detector's miss is not ours
    r = vq.result()
    assert r["frames"] == 12 and r["frames_swapped"] == 10
    assert r["detect_rate"] == pytest.approx(7 / 9)
    assert VideoQuality().result()["detect_rate"] is None


def test_nothing_swapped_gives_none() -> None:
    tgt = target_frame(0, texture(13))
    vq = VideoQuality()
    vq.add(tgt, tgt, None)
    r = vq.result()
    assert r["frames"] == 1 and r["frames_swapped"] == 0
    assert r["flicker"] is None and r["seam"] is None and r["colour_gap"] is None and r["landmark_error"] is None


def test_bad_inputs_are_refused() -> None:
    tgt = target_frame(0, texture(14))
    vq = VideoQuality()
    with pytest.raises(ValueError, match="uint8"):
        vq.add(tgt.astype(np.float32), tgt, None)
    with pytest.raises(ValueError, match="differs"):
        vq.add(tgt, tgt[:-1], None)
    with pytest.raises(ValueError, match="frame-sized"):
        vq.add(tgt, tgt, np.ones((10, 10), np.float32))
    with pytest.raises(ValueError, match="0, 1"):
        vq.add(tgt, tgt, ellipse_mask(50, 50) * 255)


def test_uint8_and_bool_masks_match_float() -> None:
    tex = texture(15)
    results = []
    for convert in (lambda m: m, lambda m: (m * 255).astype(np.uint8), lambda m: m > 0.5):
        frames = []
        for t in range(4):
            tgt = target_frame(t, tex)
            mask = ellipse_mask(*path(t))
            frames.append((tgt, blend(tgt, tgt.astype(np.float32) + 20, mask), convert(mask)))
        results.append(run(frames))
    for key in ("flicker", "seam", "colour_gap"):
        assert results[0][key] == results[1][key] == results[2][key]


# -- reconstruction ------------------------------------------------------------------------------


def faces(n: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(20, 236, (n, 32, 32, 3), dtype=np.uint8)


def test_identical_reconstruction() -> None:
    x = faces()
    r = reconstruction_metrics(x, x.copy())
    assert r["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert r["psnr"] == PSNR_CAP_DB and r["l1"] == 0.0 and r["n"] == 4
    single = reconstruction_metrics(x[0], x[0].astype(np.float32) / 255)  # one image, uint8 vs float
    assert single["n"] == 1 and single["l1"] == pytest.approx(0.0, abs=1e-7)


def test_psnr_and_l1_of_a_known_error() -> None:
    x = faces()
    rng = np.random.default_rng(1)
    d = 5
    signs = rng.choice([-1, 1], x.shape)
    pred = (x.astype(np.int16) + d * signs).astype(np.uint8)  # every value off by exactly 5 levels
    r = reconstruction_metrics(pred, x)
    assert r["psnr"] == pytest.approx(20 * math.log10(255 / d), abs=1e-9)
    assert r["l1"] == pytest.approx(d / 255, abs=1e-12)
    assert r["ssim"] < 0.999
    # random noise, per-sample PSNR averaged: the formula computed here in float64
    noisy = np.clip(x + rng.normal(0, 6, x.shape), 0, 255).astype(np.uint8)
    mse = ((noisy.astype(np.float64) - x) / 255) ** 2
    expected = np.mean([10 * math.log10(1 / m) for m in mse.reshape(len(x), -1).mean(1)])
    r2 = reconstruction_metrics(noisy, x)
    assert r2["psnr"] == pytest.approx(expected, abs=1e-9)
    assert r2["ssim"] < r["ssim"]  # more error, less structure


def test_reconstruction_mask_restricts_and_weighs() -> None:
    x = faces()
    pred = x.copy()
    pred[:, :, 16:] = 255 - pred[:, :, 16:]  # the right half ruined
    left = np.zeros((32, 32), bool)
    left[:, :10] = True  # well clear of the right half (SSIM's window reaches 5 px)
    r = reconstruction_metrics(pred, x, left)
    assert r["l1"] == 0.0 and r["psnr"] == PSNR_CAP_DB and r["ssim"] == pytest.approx(1.0, abs=1e-5)
    # per-sample masks, soft: weight 1 on the left half, 0.5 on the right
    soft = np.where(np.arange(32) < 16, 1.0, 0.5).astype(np.float32)[None, None, :].repeat(32, 1).repeat(4, 0)
    err = np.abs(pred.astype(np.float64) - x) / 255
    expected_l1 = (err.mean(-1) * soft).sum((1, 2)) / soft.sum((1, 2))
    assert reconstruction_metrics(pred, x, soft)["l1"] == pytest.approx(expected_l1.mean(), rel=1e-9)


def test_reconstruction_refuses_bad_inputs() -> None:
    x = faces()
    with pytest.raises(ValueError, match="shape"):
        reconstruction_metrics(x, x[:, :16])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        reconstruction_metrics(x.astype(np.float32), x)  # 0-255 floats
    with pytest.raises(ValueError, match="empty"):
        reconstruction_metrics(x, x, np.zeros((32, 32), np.float32))
