"""Finding a tiled watermark's grid in a cropped, padded or rescaled frame (registration).

The v2 watermark (facedag.provenance.watermark) repeats one square tile of keyed cells over the
whole frame. Whatever a platform does to the picture (crop it to 9:16, letterbox or pillarbox it,
zoom in, add a border and scale), the part that is left still shows the same tile, repeated with
some period (px, py) in the copy's pixels and some phase. Registration recovers both, so that the
cells can be read as if the copy were the marked frame:

- Period: a periodic pattern has all its spectral power on a lattice of frequencies
  (kx / px, ky / py). Each axis' marginal of the whitened power spectrum is then a comb with
  teeth at multiples of 1 / p; `comb_periods` scores every candidate p by the power on its teeth
  minus the power halfway between them (which rejects p / 2, whose teeth fall on every other
  tooth of p, and 2p, half of whose teeth fall on nothing). The spectrum is taken of the frame
  differences summed under each candidate temporal sync (the caller's job): summed with the right
  signs the mark adds up and the picture does not, which a sign-free sum of spectra cannot do
  (a moving picture's spectrum is the same in every frame, so it does not average out).
- Phase: the frame is `fold`ed onto one tile (each pixel added to its place modulo the period),
  and the fold is cross-correlated (FFT, circular) with the key's pilot pattern.

Pure numpy/OpenCV, no knowledge of the key or the payload: facedag.provenance.watermark owns those.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

PAD = 1  # zero-padding factor of the spectra (2 read every edit of the tests the same, at 4x the FFT time)
_WHITEN = 9 * PAD  # box size (frequency bins) of the local mean the power spectrum is divided by
_MIN_BIN = 3 * PAD  # lowest frequency bin that counts (below it, what is left of the picture dominates)
_STEP = 0.002  # relative step of the period search (log grid)
_HALF_PERIOD_RATIO = 0.5  # p / 2 replaces p when its comb has this share of p's contrast (comb_periods)


def power_spectra(images: np.ndarray) -> np.ndarray:
    """|rfft2(image)|^2 of each of `images` (n, h, w).

    No window: a tile that fits only two or three times across the copy (a 9:16 crop) gives comb
    teeth two or three bins apart, which a Hann window's four-bin main lobe merges (measured: the
    sync of a 10 % crop is lost with it, found without). What the edges leak falls mostly on the
    zero-frequency row and column, which the marginals dilute. Zero-padded PAD x (comb lengths
    are then PAD x the image's)."""
    images = np.asarray(images, np.float32)
    n, h, w = images.shape
    out = np.empty((n, PAD * h, PAD * w // 2 + 1), np.float32)
    for i, image in enumerate(images):  # OpenCV's DFT: 4x numpy's on 64 sums of 360x640 (0.13 vs 0.58 s)
        padded = cv2.copyMakeBorder(image, 0, (PAD - 1) * h, 0, (PAD - 1) * w, cv2.BORDER_CONSTANT, value=0)
        spec = cv2.dft(padded, flags=cv2.DFT_COMPLEX_OUTPUT)[:, : PAD * w // 2 + 1]
        out[i] = spec[..., 0] ** 2 + spec[..., 1] ** 2
    return out


def marginals(spectra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each whitened spectrum's mean over rows (a comb in x) and over columns (a comb in y).

    `spectra` (n, h, w // 2 + 1) from `power_spectra`. Whitening divides by the local mean
    (_WHITEN bins square), so the picture's smooth spectrum weighs 1 everywhere and the tile's
    lattice of peaks stands out."""
    h = spectra.shape[1]
    out_x, out_y = [], []
    for spectrum in spectra:
        half = np.ascontiguousarray(spectrum[: h // 2 + 1])  # fy >= 0 (the rest mirrors it)
        half = half / (cv2.blur(half, (_WHITEN, _WHITEN), borderType=cv2.BORDER_REFLECT) + 1e-12)
        out_x.append(half.mean(axis=0))
        out_y.append(half.mean(axis=1))
    return np.stack(out_x), np.stack(out_y)


def _comb_matrix(n_bins: int, length: int, lo: float, hi: float, max_harmonic: int) -> tuple[np.ndarray, np.ndarray]:
    """(periods, M): M @ marginal is each candidate period's comb contrast (mean power on the
    teeth less mean power halfway between them), by linear interpolation between bins."""
    periods = np.exp(np.arange(math.log(lo), math.log(hi), _STEP))
    m = np.zeros((len(periods), n_bins), np.float32)
    top = n_bins - 1
    for i, p in enumerate(periods):
        fundamental = length / p
        teeth = np.arange(1, max_harmonic + 1) * fundamental
        teeth = teeth[(teeth >= _MIN_BIN) & (teeth + 0.5 * fundamental <= top)]
        if len(teeth) < 3:
            continue
        for positions, sign in ((teeth, 1.0), (teeth + 0.5 * fundamental, -1.0)):
            left = np.floor(positions).astype(np.int64)
            frac = positions - left
            np.add.at(m[i], left, sign * (1 - frac) / len(teeth))
            np.add.at(m[i], np.minimum(left + 1, top), sign * frac / len(teeth))
    return periods, m


def comb_periods(marginals_: np.ndarray, length: int, lo: float, hi: float,
                 max_harmonic: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """For each marginal (n, bins), the period in [lo, hi] (px) whose comb of harmonics matches it
    best, and that comb's contrast (in units of the whitened baseline: about 0 without a tile).

    The contrast rejects p / 2 (its teeth fall on every other tooth of p, its gaps on the others)
    and 2p (half of its teeth fall between p's)."""
    periods, m = _comb_matrix(marginals_.shape[1], length, lo, hi, max_harmonic)
    scores = marginals_.astype(np.float32) @ m.T  # (n, periods)
    best = np.argmax(scores, axis=1)
    rows = np.arange(len(best))
    # 2p can still win when the tile's upper harmonics drown in noise: its teeth sample only the
    # lower half of p's band, where the peaks stand highest. p / 2 then tells: its teeth and gaps
    # both fall on p's teeth, so its contrast is about 0 for the true period and about twice the
    # winner's (less what decays) when the winner is 2p.
    octave = round(math.log(2) / _STEP)
    for _ in range(2):
        half = best - octave
        ok = half >= 0
        take = ok & (scores[rows, np.maximum(half, 0)] >= _HALF_PERIOD_RATIO * scores[rows, best])
        best = np.where(take, half, best)
    return periods[best], scores[rows, best]


def fold(image: np.ndarray, period: tuple[float, float], bins: int) -> np.ndarray:
    """`image` folded onto one tile of `bins` x `bins`: resampled so that one period (px, py) spans
    `bins` samples, then every sample added to its place modulo the tile. Zeros (a letterbox's bars,
    where frame differences vanish) add nothing."""
    h, w = image.shape
    px, py = period
    size = (max(1, round(w * bins / px)), max(1, round(h * bins / py)))
    small = cv2.resize(np.asarray(image, np.float32), size, interpolation=cv2.INTER_AREA)
    ny, nx = -(-size[1] // bins), -(-size[0] // bins)
    padded = np.zeros((ny * bins, nx * bins), np.float32)
    padded[: size[1], : size[0]] = small
    return padded.reshape(ny, bins, nx, bins).sum(axis=(0, 2))


def circular_xcorr(folds: np.ndarray, template: np.ndarray) -> np.ndarray:
    """c[..., dy, dx] = sum over (y, x) of folds[..., y + dy, x + dx] * template[y, x] (indices
    modulo the tile), for a stack of folds (..., b, b) against one template (b, b)."""
    spec = np.fft.rfft2(folds) * np.conj(np.fft.rfft2(template))
    return np.fft.irfft2(spec, s=template.shape)
