"""The One Euro filter steadies a noisy landmark track without lagging behind fast motion."""

from __future__ import annotations

import numpy as np

from facedag.faces.smoothing import LandmarkSmoother, OneEuroFilter
from facedag.params import Convert

FPS = 25.0


def _track(n: int = 250, noise: float = 1.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times, truth, noisy): 5 landmarks of a face drifting slowly, with detector-like jitter."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FPS
    base = np.array([[280, 200], [360, 200], [320, 245], [290, 290], [350, 290]], np.float64)
    drift = np.stack([20 * np.sin(2 * np.pi * 0.1 * t), 10 * np.cos(2 * np.pi * 0.1 * t)], axis=1)
    truth = base[None] + drift[:, None, :]
    noisy = truth + rng.normal(0, noise, truth.shape)
    return t, truth, noisy


def test_one_euro_reduces_jitter_on_a_noisy_track():
    t, truth, noisy = _track()
    cfg = Convert()
    smoother = LandmarkSmoother(cfg.smooth_min_cutoff, cfg.smooth_beta)
    out = np.stack([smoother(0, ti, x) for ti, x in zip(t, noisy, strict=True)])
    err_raw = np.sqrt(((noisy - truth) ** 2).mean())
    err_out = np.sqrt(((out - truth) ** 2)[10:].mean())
    assert err_out < 0.7 * err_raw  # the lag of smoothing costs a little of the gain
    # frame-to-frame jitter (second differences) drops a lot more
    jitter = lambda a: np.abs(np.diff(a[10:], n=2, axis=0)).mean()  # noqa: E731
    assert jitter(out) < 0.3 * jitter(noisy)


def test_speed_raises_the_cutoff_so_fast_motion_does_not_lag():
    t = np.arange(50) / FPS
    ramp = (600.0 * t)[:, None]  # 600 px/s: a fast pan
    lag = {}
    for beta in (0.0, 2.0):
        f = OneEuroFilter(min_cutoff=1.0, beta=beta)
        out = np.array([f(ti, x, scale=200.0) for ti, x in zip(t, ramp, strict=True)])
        lag[beta] = float(np.abs(out[-10:] - ramp[-10:]).mean())
    assert lag[2.0] < 0.5 * lag[0.0]


def test_first_value_passes_and_new_tracks_or_gaps_start_afresh():
    s = LandmarkSmoother(min_cutoff=0.5, beta=0.0, max_gap=0.5)
    a = np.array([[0, 0], [50, 0], [25, 30], [10, 60], [40, 60]], np.float64)
    np.testing.assert_allclose(s(0, 0.0, a), a)
    moved = a + 100
    assert np.abs(s(0, 0.04, moved) - moved).max() > 50  # smoothed toward the old place
    np.testing.assert_allclose(s(1, 0.08, moved), moved)  # another track: its own filter
    np.testing.assert_allclose(s(0, 2.0, a), a)  # a long gap: no gliding from the past


def test_repeated_timestamp_is_harmless():
    f = OneEuroFilter()
    x = np.array([1.0, 2.0])
    f(0.0, x)
    np.testing.assert_allclose(f(0.0, x + 5), x)
