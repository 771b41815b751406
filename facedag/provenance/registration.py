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

import functools
import math

import cv2
import numpy as np
import scipy.sparse

PAD = 1  # zero-padding factor of the spectra (2 read every edit of the tests the same, at 4x the FFT time)
_WHITEN = 9 * PAD  # box size (frequency bins) of the local mean the power spectrum is divided by
_MIN_BIN = 3 * PAD  # lowest frequency bin that counts (below it, what is left of the picture dominates)
_STEP = 0.002  # relative step of the period search (log grid)
_HALF_PERIOD_RATIO = 0.5  # p / 2 replaces p when its comb has this share of p's contrast (comb_periods)


def power_spectra(images: np.ndarray) -> np.ndarray:
    """|rfft2(image)|^2 of each of `images` (n, h, w), for the non-negative vertical frequencies
    (rows 0 .. h // 2: the rest mirrors them), as (n, h // 2 + 1, w // 2 + 1).

    No window: a tile that fits only two or three times across the copy (a 9:16 crop) gives comb
    teeth two or three bins apart, which a Hann window's four-bin main lobe merges (measured: the
    sync of a 10 % crop is lost with it, found without). What the edges leak falls mostly on the
    zero-frequency row and column, which the marginals dilute. Zero-padded PAD x (comb lengths
    are then PAD x the image's)."""
    images = np.asarray(images, np.float32)
    n, h, w = images.shape
    ph, pw = PAD * h, PAD * w
    out = np.empty((n, ph // 2 + 1, pw // 2 + 1), np.float32)
    for i, image in enumerate(images):
        padded = cv2.copyMakeBorder(image, 0, (PAD - 1) * h, 0, (PAD - 1) * w, cv2.BORDER_CONSTANT, value=0)
        # OpenCV's real DFT, packed (CCS): 4.7x its complex output and 15x numpy's on 360x640
        _ccs_power(cv2.dft(padded), out[i])
    return out


def _ccs_power(ccs: np.ndarray, out: np.ndarray) -> None:
    """|F|^2 into `out` (h // 2 + 1, w // 2 + 1) from OpenCV's packed DFT `ccs` (h, w) of a real
    image: columns 2k-1, 2k hold the real and imaginary parts of column k for every row; the
    zero-frequency column (and, for an even w, the last) packs its own half the same way down its rows."""
    h, w = ccs.shape
    rows = h // 2 + 1
    inner = (w - 1) // 2  # columns with both parts side by side
    re, im = ccs[:rows, 1 : 2 * inner : 2], ccs[:rows, 2 : 2 * inner + 1 : 2]
    np.add(np.square(re), np.square(im), out=out[:, 1 : inner + 1])
    edges = [(0, 0)] + ([(w - 1, w // 2)] if w % 2 == 0 else [])
    pairs = (h - 1) // 2
    for src, dst in edges:
        column = ccs[:, src]
        out[0, dst] = column[0] ** 2
        out[1 : pairs + 1, dst] = column[1 : 2 * pairs : 2] ** 2 + column[2 : 2 * pairs + 1 : 2] ** 2
        if h % 2 == 0:
            out[h // 2, dst] = column[h - 1] ** 2


def whiten(spectra: np.ndarray) -> np.ndarray:
    """Each of `spectra` (n, h // 2 + 1, w // 2 + 1, from `power_spectra`) divided by its local mean
    (_WHITEN bins square), so the picture's smooth spectrum weighs 1 everywhere and the tile's
    lattice of peaks stands out."""
    out = np.empty_like(spectra, dtype=np.float32)
    for i, spectrum in enumerate(spectra):
        out[i] = spectrum / (cv2.blur(spectrum, (_WHITEN, _WHITEN), borderType=cv2.BORDER_REFLECT) + 1e-12)
    return out


def marginals(whitened: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each whitened spectrum's mean over rows (a comb in x) and over columns (a comb in y)."""
    return whitened.mean(axis=1), whitened.mean(axis=2)


def _comb_matrix(n_bins: int, length: int, lo: float, hi: float, max_harmonic: int) -> tuple[np.ndarray, np.ndarray]:
    """(periods, M): M @ marginal is each candidate period's comb contrast (mean power on the
    teeth less mean power halfway between them), by linear interpolation between bins."""
    periods = np.exp(np.arange(math.log(lo), math.log(hi), _STEP))
    top = n_bins - 1
    fundamental = length / periods[:, None]  # (periods, 1)
    teeth = np.arange(1, max_harmonic + 1) * fundamental  # (periods, harmonics)
    used = (teeth >= _MIN_BIN) & (teeth + 0.5 * fundamental <= top)
    count = used.sum(axis=1, keepdims=True)
    used &= count >= 3  # fewer teeth than 3: no comb, the row stays 0
    row = np.broadcast_to(np.arange(len(periods))[:, None], teeth.shape)[used]
    m = np.zeros((len(periods), n_bins), np.float64)
    for offset, sign in ((0.0, 1.0), (0.5, -1.0)):  # the teeth, then halfway between them
        positions = (teeth + offset * fundamental)[used]
        left = np.floor(positions).astype(np.int64)
        frac = positions - left
        weight = sign / np.broadcast_to(count, teeth.shape)[used]
        np.add.at(m, (row, left), weight * (1 - frac))
        np.add.at(m, (row, np.minimum(left + 1, top)), weight * frac)
    return periods, m.astype(np.float32)


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
    if small.shape != (ny * bins, nx * bins):
        small = cv2.copyMakeBorder(small, 0, ny * bins - size[1], 0, nx * bins - size[0], cv2.BORDER_CONSTANT, value=0)
    # rows of tiles first (a contiguous sum), then across: half the time of one sum over both axes
    return small.reshape(ny, bins, nx * bins).sum(axis=0).reshape(bins, nx, bins).sum(axis=1)


def circular_xcorr(folds: np.ndarray, template: np.ndarray) -> np.ndarray:
    """c[..., dy, dx] = sum over (y, x) of folds[..., y + dy, x + dx] * template[y, x] (indices
    modulo the tile), for a stack of folds (..., b, b) against one template (b, b)."""
    spec = np.fft.rfft2(folds) * np.conj(np.fft.rfft2(template))
    return np.fft.irfft2(spec, s=template.shape)


@functools.lru_cache(maxsize=8)
def _lattice_matrix(shape: tuple[int, int], size: tuple[int, int], lo: float, hi: float,
                    max_harmonic: int) -> tuple[np.ndarray, scipy.sparse.csr_matrix]:  # fmt: skip
    """(periods, M): M @ a flattened whitened spectrum (`shape` (rows, cols), of an image of `size`
    (h, w) px padded PAD x) is each square period's lattice contrast: the mean power on the points
    (kx, ky) x size / p, kx and ky in 1..max_harmonic, less the mean halfway between them
    (+1/2, +1/2), by bilinear interpolation. The axes (kx or ky = 0) are left out: the edges of
    the frame leak there."""
    rows, cols = shape
    h, w = PAD * size[0], PAD * size[1]
    periods = np.exp(np.arange(math.log(lo), math.log(hi), _STEP))
    k = np.arange(1, max_harmonic + 1, dtype=np.float64)
    entries: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for i, p in enumerate(periods):
        fx, fy = k * w / p, k * h / p
        fx = fx[(fx >= _MIN_BIN) & (fx + 0.5 * w / p <= cols - 1)]
        fy = fy[(fy >= _MIN_BIN) & (fy + 0.5 * h / p <= rows - 1)]
        if len(fx) < 3 or len(fy) < 3:  # fewer teeth than 3 along an axis: no lattice, the row stays 0
            continue
        gy, gx = np.meshgrid(fy, fx, indexing="ij")
        for offset, sign in ((0.0, 1.0), (0.5, -1.0)):  # the points, then halfway between them
            y = (gy + offset * h / p).ravel()
            x = (gx + offset * w / p).ravel()
            y0, x0 = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
            ty, tx = y - y0, x - x0
            weight = sign / y.size
            for dy, dx, share in ((0, 0, (1 - ty) * (1 - tx)), (0, 1, (1 - ty) * tx), (1, 0, ty * (1 - tx)),
                                  (1, 1, ty * tx)):  # fmt: skip
                flat = np.minimum(y0 + dy, rows - 1) * cols + np.minimum(x0 + dx, cols - 1)
                entries.append((np.full(y.size, i), flat, weight * share))
    if not entries:
        return periods, scipy.sparse.csr_matrix((len(periods), rows * cols), dtype=np.float32)
    r, c, v = (np.concatenate(parts) for parts in zip(*entries, strict=True))
    m = scipy.sparse.csr_matrix((v.astype(np.float32), (r, c)), shape=(len(periods), rows * cols))
    return periods, m


def lattice_periods(whitened: np.ndarray, size: tuple[int, int], lo: float, hi: float,
                    max_harmonic: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """For each whitened spectrum (n, rows, cols) of an image of `size` (h, w), the square period
    in [lo, hi] (px) whose 2-D lattice of harmonics matches it best, and that lattice's contrast.

    The marginal combs (`comb_periods`) average every row into one comb, so each tooth carries
    the noise of a whole column; the lattice reads only its own points. On 0.75x + CRF 28 copies
    of the demo render (480 x 360, 4 x 3 tiles of 120 px), the marginal combs found 240, 80 or
    84 px for the right sync on mark ids that were then lost, and the lattice 120 px on each, with
    the right sync's contrast the highest of the 64. It assumes a square tile (no stretch), so
    it is screened beside the marginals' periods, not instead of them. p / 2 scores about 0 (its
    points and gaps both fall on p's points), 2p and 2p / 3 about a quarter (a quarter of their
    points fall on p's)."""
    n, rows, cols = whitened.shape
    periods, m = _lattice_matrix((rows, cols), (int(size[0]), int(size[1])), float(lo), float(hi), max_harmonic)
    scores = np.asarray(m @ whitened.reshape(n, rows * cols).T).T  # (n, periods)
    best = np.argmax(scores, axis=1)
    return periods[best], scores[np.arange(n), best]
