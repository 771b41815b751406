"""Temporal smoothing of face landmarks, so a swapped face does not jitter.

RetinaFace's landmarks wobble by a pixel or two from frame to frame even on a still face;
each wobble moves the aligned face, and so the pasted face, against the head around it. A
plain low-pass filter steadies that but lags behind real motion. The One Euro filter (Casiez,
Roussel and Vogel, CHI 2012, "1 Euro Filter: A Simple Speed-based Low-pass Filter for Noisy
Input in Interactive Systems") adapts its cutoff to the speed: slow motion is smoothed hard
(jitter gone), fast motion barely (no lag):

    cutoff = min_cutoff + beta * |smoothed speed|

Here the speed is measured in *face widths per second* (the caller passes the face's width in
px as `scale`), so the same `smooth_min_cutoff`/`smooth_beta` suit a close-up and a wide shot,
and for a set of points it is the speed of their mean (the whole face moves together, and
averaging five points' noise keeps the cutoff low at rest). Defaults (0.5 Hz, 10) were tuned
on synthetic tracks with 1.5 px detector noise: at rest the jitter drops about 10x; a face
crossing its own width in 2 s lags by under a pixel.
Time comes from frame timestamps (seconds), so variable frame rates are handled.

`LandmarkSmoother` keeps one filter per track (facedag.faces.detect's track ids): a new track, or a
gap longer than `max_gap` seconds (a cut, the face lost and found again), starts afresh
instead of gliding from where the face was.
"""

from __future__ import annotations

import math

import numpy as np


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    """Smoothing factor of an exponential filter with `cutoff` Hz at a step of `dt` s."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One Euro filter over an array of values (all coordinates filtered independently).

    min_cutoff (Hz): the cutoff at rest; lower is steadier and lags more.
    beta: how fast the cutoff rises with speed (per unit of `scale` per second).
    d_cutoff (Hz): the cutoff of the speed estimate itself (1 Hz, the paper's value).
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 1.0, d_cutoff: float = 1.0) -> None:
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError("min_cutoff and d_cutoff must be > 0 and beta >= 0")
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    def reset(self) -> None:
        self._x = self._dx = None
        self._t = None

    def __call__(self, t: float, x: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """Filter the value `x` observed at time `t` (s); `scale` divides the speed (see module doc)."""
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._t is None or self._x.shape != x.shape:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), float(t)
            return x.copy()
        dt = float(t) - self._t
        if dt <= 0:  # a repeated or out-of-order timestamp: nothing new to filter against
            return self._x.copy()
        self._t = float(t)
        dx = (x - self._x) / dt
        a_d = _alpha(self.d_cutoff, dt)
        assert self._dx is not None
        self._dx = a_d * dx + (1.0 - a_d) * self._dx
        if self._dx.ndim == 2:  # points (N, 2): one speed for the whole shape, the norm of its mean motion
            speed: np.ndarray | float = float(np.hypot(*self._dx.mean(axis=0)[:2]))
        else:
            speed = np.abs(self._dx)
        cutoff = self.min_cutoff + self.beta * speed / max(float(scale), 1e-6)
        a = _alpha(cutoff, dt)
        self._x = a * x + (1.0 - a) * self._x
        return self._x.copy()


class LandmarkSmoother:
    """One `OneEuroFilter` per track over (5, 2) landmarks in frame px."""

    def __init__(self, min_cutoff: float = 0.5, beta: float = 10.0, max_gap: float = 0.5) -> None:
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.max_gap = float(max_gap)
        self._filters: dict[int, OneEuroFilter] = {}
        self._last: dict[int, float] = {}

    def reset(self) -> None:
        self._filters.clear()
        self._last.clear()

    def __call__(self, track: int, t: float, landmarks: np.ndarray) -> np.ndarray:
        """The smoothed landmarks (float64 (5, 2)) of `track` at time `t`."""
        lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
        f = self._filters.get(track)
        last = self._last.get(track)
        if f is None or last is None or t - last > self.max_gap or t < last:
            f = self._filters[track] = OneEuroFilter(self.min_cutoff, self.beta)
        self._last[track] = t
        # the face's size: the eye distance and the eye-to-mouth distance, whichever is larger
        eyes = float(np.hypot(*(lm[1] - lm[0])))
        mouth = float(np.hypot(*((lm[3] + lm[4]) / 2 - (lm[0] + lm[1]) / 2))) if len(lm) >= 5 else 0.0
        scale = max(eyes, mouth, 1.0) * 2.5  # about the face's width
        return f(t, lm, scale)
