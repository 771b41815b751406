"""Quality measurements of a swap: held-out reconstruction, and the converted video's flicker,
seams, colour, expression and detectability. Pure functions on arrays, no I/O.

Users of faceswap and DeepFaceLab judge a swap by a handful of defects: the face jitters or
flickers, its colour does not match the skin around it, a seam shows at the edge of the
pasted region, the expression drifts, and profile faces come out as mush (a detector no longer
finds a face). Each is measured here so that a run can be compared with another by numbers.

Conventions (those of facedag.swap.convert and facedag.swap.blend): frames are RGB uint8 (H, W, 3); a
blend mask is frame-sized, float in [0, 1], uint8 in 0..255 or bool, and exactly 0 where the
frame was not touched (blend's feather is inward). Landmarks are the 5 RetinaFace points
(facedag.faces.detect order: eye on the image left, eye on the image right, nose, mouth corners).

Reconstruction (`reconstruction_metrics`)
-----------------------------------------
Computed on images in [0, 1] (uint8 is divided by 255) over an optional mask (a weight per
pixel; the face region of facedag.training.losses.face_region is the usual one), per sample, then
averaged over the samples:
- ssim: the masked mean of facedag.quality.ssim.ssim_map (Wang et al. 2004, 11-tap Gaussian window,
  sigma 1.5): the same SSIM training reports as its held-out figure. 1 = identical.
- psnr: 10 log10(1 / MSE) dB with the masked MSE on [0, 1], which equals the 0-255 figure
  20 log10(255 / RMSE_255). Identical samples would give infinity, which JSON (DVC metrics)
  cannot hold, so each sample is capped at PSNR_CAP_DB = 100 dB: far above any real
  reconstruction (uint8 rounding noise alone is ~59 dB).
- l1: the masked mean absolute error on [0, 1] (as the training loss's L1 term).

The converted video (`VideoQuality`)
------------------------------------
Fed one (target frame, output frame, mask) at a time, so a video is never held in memory:
only the previous frame pair is kept (copied, for flicker). Past one threshold pass over the
mask to find its bounding box, each frame is measured on that box plus a margin that holds
the skin ring, never on the whole frame (about 3 ms a frame for a 150 px face in 640x480).
Flicker, seam and colour compare the output with the untouched target at the same pixels, so
that an output identical to the target scores exactly neutral (flicker 1, seam 0, colour 0).

Geometry of one mask m: the face F = {m >= 0.5} (the 0.5 level is where the output is half
swapped); the edge band = pixels within BAND_PX of F's boundary, on both sides; the skin ring
= untouched pixels (m == 0) within `ring_frac` x the face size (sqrt of the mask's bounding
box area) of the touched region; the core = fully swapped pixels (m >= CORE_ALPHA) deeper than
BAND_PX inside F. See `VideoQuality.result` for the definitions of the measures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from facedag.quality.ssim import ssim_map

PSNR_CAP_DB = 100.0
JND_DELTA_E = 2.3  # delta E 76 just-noticeable difference (Sharma 2003); colour_gap below it is invisible
BAND_PX = 1  # half-width of the seam band, px: the pixels on either side of the 0.5 level
# a scene cut between two frames: their 64x36 grey thumbnails differ by more than this many levels
# on average (on ../shared/samples: at most 11 within a shot, about 60 across a cut from one to the other)
CUT_LEVEL = 30.0
CUT_THUMB = (64, 36)
CORE_ALPHA = 0.98  # the colour of the face is read where it is (nearly) fully swapped

# ---------------------------------------------------------------------------------------------
# Reconstruction on held-out faces
# ---------------------------------------------------------------------------------------------


def _images(x: np.ndarray, name: str) -> np.ndarray:
    """(N, H, W, 3) uint8 or float in [0, 1] ((H, W, 3) gets N = 1), checked, not yet converted."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"{name} must be (N, H, W, 3) or (H, W, 3), got {x.shape}")
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must be uint8 or float in [0, 1], got {x.dtype}")
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    if lo < -1e-3 or hi > 1.0 + 1e-3:  # 0-255 floats are a units mistake, not a quality
        raise ValueError(f"float {name} must lie in [0, 1], got [{lo:g}, {hi:g}]")
    return x


def _unit(x: np.ndarray) -> np.ndarray:
    """float64 in [0, 1]: uint8 / 255, float as is."""
    return x / 255.0 if x.dtype == np.uint8 else x.astype(np.float64)


def _mask_weights(mask: np.ndarray, n: int, h: int, w: int) -> np.ndarray:
    """(N, H, W) float32 weights in [0, 1] from a bool, uint8 (0..255) or float mask, shared or per sample."""
    m = np.asarray(mask)
    if m.ndim >= 3 and m.shape[-1] == 1:
        m = m[..., 0]
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.shape[1:] != (h, w) or m.shape[0] not in (1, n):
        raise ValueError(f"mask must be (H, W) or (N, H, W) with H, W = {h}, {w}, got {np.shape(mask)}")
    return _unit_mask(m)


def _unit_mask(m: np.ndarray) -> np.ndarray:
    """A mask as float32 in [0, 1]: bool -> 0/1, uint8 -> /255, float as is (checked)."""
    if m.dtype == np.bool_:
        return m.astype(np.float32)
    if m.dtype == np.uint8:
        return m.astype(np.float32) / 255.0
    if not np.issubdtype(m.dtype, np.floating):
        raise ValueError(f"mask must be bool, uint8 or float in [0, 1], got {m.dtype}")
    if m.size and (float(m.min()) < 0.0 or float(m.max()) > 1.0 + 1e-6):
        raise ValueError("a float mask must lie in [0, 1]")
    return m.astype(np.float32, copy=False)


def reconstruction_metrics(
    pred: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None, batch: int = 64
) -> dict[str, float]:
    """SSIM, PSNR (dB) and L1 of `pred` against `truth` over `mask`, averaged over the samples.

    pred, truth: (N, H, W, 3) or (H, W, 3) RGB, uint8 or float in [0, 1] (each may be either).
    mask: None (every pixel), or (H, W) / (N, H, W) (trailing 1 allowed) weights: bool, uint8
        0..255 or float in [0, 1]; a soft mask weighs its pixels (as the training loss does).
    batch: samples per SSIM pass (bounds the memory of the filtered maps).
    Returns {"ssim", "psnr", "l1", "n"}: see the module docstring for the definitions; psnr is
    capped at PSNR_CAP_DB per sample. Raises ValueError on mismatched shapes or an empty mask.
    """
    p = _images(pred, "pred")
    t = _images(truth, "truth")
    if p.shape != t.shape:
        raise ValueError(f"pred {p.shape} and truth {t.shape} differ in shape")
    n, h, w, _ = p.shape
    weights = np.ones((1, h, w), np.float32) if mask is None else _mask_weights(mask, n, h, w)
    weights = np.broadcast_to(weights, (n, h, w))
    wsum = weights.reshape(n, -1).sum(1, dtype=np.float64)
    if n == 0 or (wsum <= 0).any():
        raise ValueError("no samples, or a sample whose mask is empty")
    ssim, l1, mse = np.empty(n), np.empty(n), np.empty(n)
    for i in range(0, n, batch):  # a batch at a time: float copies of a whole held-out set add up
        pi, ti = _unit(p[i : i + batch]), _unit(t[i : i + batch])
        wi = weights[i : i + batch].reshape(len(pi), -1).astype(np.float64)
        a = torch.from_numpy(pi.transpose(0, 3, 1, 2).astype(np.float32))
        b = torch.from_numpy(ti.transpose(0, 3, 1, 2).astype(np.float32))
        smap = ssim_map(a, b).numpy().mean(1, dtype=np.float64)  # SSIM in float32, as training's
        ssim[i : i + len(pi)] = (smap.reshape(len(pi), -1) * wi).sum(1)
        # float64 for the error sums: a PSNR is a small difference of large numbers near identity
        diff = pi - ti
        l1[i : i + len(pi)] = (np.abs(diff).mean(-1).reshape(len(pi), -1) * wi).sum(1)
        mse[i : i + len(pi)] = ((diff * diff).mean(-1).reshape(len(pi), -1) * wi).sum(1)
    ssim, l1, mse = ssim / wsum, l1 / wsum, mse / wsum
    with np.errstate(divide="ignore"):
        psnr = np.minimum(10.0 * np.log10(1.0 / mse), PSNR_CAP_DB)
    return {"ssim": float(ssim.mean()), "psnr": float(psnr.mean()), "l1": float(l1.mean()), "n": int(n)}


def landmark_error(output_landmarks: np.ndarray, target_landmarks: np.ndarray) -> float | None:
    """Mean distance of the 5 output landmarks from the target's, over the target's eye distance.

    Normalised by the inter-ocular distance (the two eye points of the target) so that the
    figure does not depend on the face's size in the frame; 0.05 is about a quarter of an
    eye's width. None when the target's eyes coincide (nothing to normalise by).
    """
    out = np.asarray(output_landmarks, np.float64).reshape(5, 2)
    tgt = np.asarray(target_landmarks, np.float64).reshape(5, 2)
    iod = float(np.hypot(*(tgt[1] - tgt[0])))
    if not math.isfinite(iod) or iod < 1e-6:
        return None
    return float(np.hypot(*(out - tgt).T).mean() / iod)


# ---------------------------------------------------------------------------------------------
# The converted video, streamed
# ---------------------------------------------------------------------------------------------


@dataclass
class _Previous:
    """What flicker needs of the last swapped frame: its pixels and where its mask was."""

    target: np.ndarray
    output: np.ndarray
    support: np.ndarray  # bool crop of mask > 0 over `box`
    box: tuple[int, int, int, int]  # x0, y0, x1, y1
    thumb: np.ndarray  # the target's grey thumbnail (`cut_thumb`), for the cut test


def _normal_derivative(lab: np.ndarray, nx: np.ndarray, ny: np.ndarray) -> np.ndarray:
    """|d LAB / d n| per pixel (delta E per px along the unit field n): the step across an edge."""
    gx = cv2.Sobel(lab, cv2.CV_32F, 1, 0, ksize=3, scale=0.125)
    gy = cv2.Sobel(lab, cv2.CV_32F, 0, 1, ksize=3, scale=0.125)
    dn = gx * nx[..., None] + gy * ny[..., None]
    return cv2.sqrt(cv2.transform(dn * dn, _ONES_1X3))  # the sum over channels, a cv2 pass


_ONES_1X3 = np.ones((1, 3), np.float32)


def _srgb_to_xyz_lut() -> tuple[np.ndarray, np.ndarray]:
    """The sRGB decoding of each 8-bit level (IEC 61966-2-1), and RGB -> XYZ / D65 white (float32)."""
    c = np.arange(256, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    rgb_to_xyz = np.array([[0.4124564, 0.3575761, 0.1804375],
                           [0.2126729, 0.7151522, 0.0721750],
                           [0.0193339, 0.1191920, 0.9503041]])  # fmt: skip
    white = rgb_to_xyz.sum(1)  # D65: RGB (1, 1, 1)
    return linear.astype(np.float32), (rgb_to_xyz / white[:, None]).astype(np.float32)


_LINEAR, _RGB_TO_XYZ_N = _srgb_to_xyz_lut()
_EPS = (6.0 / 29.0) ** 3
# L = 116 fy - 16, a = 500 (fx - fy), b = 200 (fy - fz): a 3x4 affine map for cv2.transform
_F_TO_LAB = np.array([[0, 116, 0, -16], [500, -500, 0, 0], [0, 200, -200, 0]], np.float32)


def _lab(rgb: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (D65, 2 degrees) in real units (L 0..100) of an RGB uint8 image, float32.

    The CIE formulas, not cv2.cvtColor: OpenCV's float RGB -> LAB goes through lookup tables
    that round a* and b* to 1/64 and are off by up to ~0.4 delta E (measured against
    scikit-image), a fifth of the JND this module's colour gap is read against. These are
    within 0.005 of scikit-image and no slower on a face crop.
    """
    xyz = cv2.transform(_LINEAR[rgb], _RGB_TO_XYZ_N)  # X/Xn, Y/Yn, Z/Zn, all >= 0
    f = cv2.pow(xyz, 1.0 / 3.0)
    dark = xyz <= _EPS  # the linear toe of the CIE f (near-black pixels only)
    if dark.any():
        f[dark] = xyz[dark] * np.float32(1 / (3 * (6 / 29) ** 2)) + np.float32(4 / 29)
    return cv2.transform(f, _F_TO_LAB)


def cut_thumb(frame: np.ndarray) -> np.ndarray:
    """The grey CUT_THUMB thumbnail of an RGB frame that `is_cut` compares."""
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, CUT_THUMB, interpolation=cv2.INTER_AREA)


def is_cut(before: np.ndarray, after: np.ndarray) -> bool:
    """Whether two consecutive frames are across a scene cut, given their `cut_thumb`s: the
    thumbnails differ by more than CUT_LEVEL levels on average (a whole-frame test, so a
    moving face is no cut)."""
    return float(cv2.absdiff(before, after).mean()) > CUT_LEVEL


class VideoQuality:
    """Streaming quality measures of a converted video against its target; see `result`.

    Call `add` once per frame, in order, then `result`. Memory: one frame pair (the previous
    swapped one, copied) whatever the length of the video.
    """

    def __init__(self, band_px: int = BAND_PX, ring_frac: float = 0.08) -> None:
        """band_px: half-width of the seam band; ring_frac: width of the skin ring as a fraction of
        the face size (sqrt of the mask's bounding box area), at least 2 px."""
        self.band_px = int(band_px)
        self.ring_frac = float(ring_frac)
        self.frames = 0
        self.frames_swapped = 0
        self._prev: _Previous | None = None
        # flicker: exact integer sums of |change| (0-255 levels) over pair pixels x channels
        self._flicker_out = 0
        self._flicker_tgt = 0
        self._flicker_n = 0
        self._flicker_pairs = 0
        self._flicker_cuts = 0
        # seam: sums of |d LAB / d n| over band pixels (output, target) and over ring pixels (target)
        self._band_out = 0.0
        self._band_tgt = 0.0
        self._band_n = 0
        self._ring_grad = 0.0
        self._ring_n = 0
        # colour: per-frame delta E values
        self._colour_gap: list[float] = []
        self._colour_raw_out: list[float] = []
        self._colour_raw_tgt: list[float] = []
        self._landmark_errors: list[float] = []
        self._found = 0
        self._found_known = 0

    def add(
        self,
        target_frame: np.ndarray,
        output_frame: np.ndarray,
        mask: np.ndarray | None,
        target_landmarks: np.ndarray | None = None,
        output_landmarks: np.ndarray | None = None,
        output_face_found: bool | None = None,
    ) -> dict[str, float | bool | None]:
        """Measure one frame; returns its own figures (for a per-frame table).

        target_frame, output_frame: RGB uint8 (H, W, 3), the same frame before and after convert.
        mask: the blend mask in frame coordinates (float [0, 1], uint8 0..255 or bool), None
            (or all 0) when no face was swapped in this frame: such a frame counts in `frames`
            only, and breaks the flicker chain.
        target_landmarks, output_landmarks: (5, 2) frame px; the output's as detected on the
            output frame (ignored when output_face_found is False).
        output_face_found: whether a face is detected on the output; None = not checked.
        The returned dict has swapped, flicker_output and flicker_target (mean |change| in
        levels, None without a swapped previous frame), seam (this frame's, as in `result`),
        colour_gap and landmark_error (None where not measurable).
        """
        tgt = np.asarray(target_frame)
        out = np.asarray(output_frame)
        if tgt.dtype != np.uint8 or out.dtype != np.uint8 or tgt.ndim != 3 or tgt.shape[-1] != 3:
            raise ValueError(f"frames must be RGB uint8 (H, W, 3), got {tgt.shape} {tgt.dtype} / {out.dtype}")
        if out.shape != tgt.shape:
            raise ValueError(f"output frame {out.shape} differs from target frame {tgt.shape}")
        self.frames += 1
        row: dict[str, float | bool | None] = dict.fromkeys(
            ("flicker_output", "flicker_target", "seam", "colour_gap", "landmark_error"), None
        )
        row["swapped"] = False
        if mask is None:
            self._prev = None
            return row
        mask = np.asarray(mask)
        if mask.ndim == 3 and mask.shape[-1] == 1:
            mask = mask[..., 0]
        if mask.shape != tgt.shape[:2]:
            raise ValueError(f"mask {mask.shape} is not frame-sized {tgt.shape[:2]}")
        support_full = mask > 0
        bx, by, bw, bh = cv2.boundingRect(support_full.view(np.uint8))
        if bw == 0:
            self._prev = None
            return row
        row["swapped"] = True
        self.frames_swapped += 1
        box = (bx, by, bx + bw, by + bh)
        support = support_full[by : by + bh, bx : bx + bw]
        self._add_flicker(tgt, out, support, box, row)
        self._add_edges(tgt, out, mask, box, row)
        if output_face_found is not None:
            self._found_known += 1
            self._found += bool(output_face_found)
        if output_landmarks is not None and target_landmarks is not None and output_face_found is not False:
            err = landmark_error(output_landmarks, target_landmarks)
            if err is not None:
                self._landmark_errors.append(err)
                row["landmark_error"] = err
        return row

    def _add_flicker(self, tgt: np.ndarray, out: np.ndarray, support: np.ndarray, box: tuple[int, int, int, int],
                     row: dict[str, float | bool | None]) -> None:  # fmt: skip
        """Frame-to-frame change over the union of this and the previous frame's touched pixels.

        A scene cut in the target (`is_cut`) restarts the chain instead: across a cut both videos
        change completely, and that pair would pull any ratio toward 1, hiding the flicker."""
        prev = self._prev
        thumb = cut_thumb(tgt)
        if prev is not None and is_cut(prev.thumb, thumb):
            self._flicker_cuts += 1
            prev.target[...] = tgt
            prev.output[...] = out
            prev.support, prev.box, prev.thumb = support.copy(), box, thumb
        elif prev is not None:
            x0, y0 = min(box[0], prev.box[0]), min(box[1], prev.box[1])
            x1, y1 = max(box[2], prev.box[2]), max(box[3], prev.box[3])
            union = np.zeros((y1 - y0, x1 - x0), bool)
            union[box[1] - y0 : box[3] - y0, box[0] - x0 : box[2] - x0] |= support
            union[prev.box[1] - y0 : prev.box[3] - y0, prev.box[0] - x0 : prev.box[2] - x0] |= prev.support
            keep = union.view(np.uint8)
            # integer sums (exact in double far beyond any frame): identical inputs give equal sums
            d_out = cv2.absdiff(out[y0:y1, x0:x1], prev.output[y0:y1, x0:x1])
            d_tgt = cv2.absdiff(tgt[y0:y1, x0:x1], prev.target[y0:y1, x0:x1])
            s_out = round(sum(cv2.sumElems(cv2.bitwise_and(d_out, d_out, mask=keep))))
            s_tgt = round(sum(cv2.sumElems(cv2.bitwise_and(d_tgt, d_tgt, mask=keep))))
            count = 3 * cv2.countNonZero(keep)
            self._flicker_out += s_out
            self._flicker_tgt += s_tgt
            self._flicker_n += count
            self._flicker_pairs += 1
            row["flicker_output"], row["flicker_target"] = s_out / count, s_tgt / count
            prev.target[...] = tgt  # reuse the buffers: no allocation per frame
            prev.output[...] = out
            prev.support, prev.box, prev.thumb = support.copy(), box, thumb
        else:
            self._prev = _Previous(tgt.copy(), out.copy(), support.copy(), box, thumb)

    def _add_edges(self, tgt: np.ndarray, out: np.ndarray, mask: np.ndarray, box: tuple[int, int, int, int],
                   row: dict[str, float | bool | None]) -> None:  # fmt: skip
        """Seam (step across the 0.5 level) and colour gap (core vs skin ring) on the box + margin."""
        h, w = tgt.shape[:2]
        size = math.sqrt((box[2] - box[0]) * (box[3] - box[1]))
        ring_px = max(2, round(self.ring_frac * size))
        margin = ring_px + self.band_px + 2  # the ring, and the Sobel stencil beyond it
        x0, y0 = max(0, box[0] - margin), max(0, box[1] - margin)
        x1, y1 = min(w, box[2] + margin), min(h, box[3] + margin)
        m = _unit_mask(mask[y0:y1, x0:x1])
        face = (m >= 0.5).view(np.uint8)
        if not cv2.countNonZero(face):
            return  # a faint mask: nothing is more than half swapped, so there is no edge
        touched = m > 0
        # distances: inside the face to its edge, outside the face to it, outside the touched region to it
        # (pixels beyond the frame count as neither, so the frame border is never taken for an edge)
        d_in = cv2.distanceTransform(face, cv2.DIST_L2, cv2.DIST_MASK_5)
        d_out = cv2.distanceTransform(1 - face, cv2.DIST_L2, cv2.DIST_MASK_5)
        d_touch = cv2.distanceTransform((~touched).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_5)
        # 0/1 uint8 masks: cv2.countNonZero and cv2.mean(mask=) sum in double, several times faster
        # than numpy's boolean indexing on a face crop
        band = (np.where(face > 0, d_in, d_out) <= self.band_px).view(np.uint8)
        ring = (~touched & (d_touch <= ring_px)).view(np.uint8)
        core = ((m >= CORE_ALPHA) & (d_in > self.band_px)).view(np.uint8)
        nb, nr, nc = cv2.countNonZero(band), cv2.countNonZero(ring), cv2.countNonZero(core)
        if not nr:
            return  # the touched region fills the frame: no untouched skin to compare with
        lab_out, lab_tgt = _lab(out[y0:y1, x0:x1]), _lab(tgt[y0:y1, x0:x1])
        if nb:
            # unit normals of the face outline: the gradient of its signed distance field
            sdf = d_out - d_in
            nx = cv2.Sobel(sdf, cv2.CV_32F, 1, 0, ksize=3)
            ny = cv2.Sobel(sdf, cv2.CV_32F, 0, 1, ksize=3)
            norm = np.sqrt(nx * nx + ny * ny)
            norm[norm == 0] = 1.0
            nx /= norm
            ny /= norm
            g_out = _normal_derivative(lab_out, nx, ny)
            g_tgt = _normal_derivative(lab_tgt, nx, ny)
            b_out, b_tgt = cv2.mean(g_out, band)[0] * nb, cv2.mean(g_tgt, band)[0] * nb
            r = cv2.mean(g_tgt, ring)[0] * nr
            self._band_out += b_out
            self._band_tgt += b_tgt
            self._band_n += nb
            self._ring_grad += r
            self._ring_n += nr
            row["seam"] = _seam(b_out, b_tgt, nb, r, nr)
        if nc:
            gap_out = np.subtract(cv2.mean(lab_out, core)[:3], cv2.mean(lab_out, ring)[:3])
            gap_tgt = np.subtract(cv2.mean(lab_tgt, core)[:3], cv2.mean(lab_tgt, ring)[:3])
            gap = float(np.linalg.norm(gap_out - gap_tgt))
            self._colour_gap.append(gap)
            self._colour_raw_out.append(float(np.linalg.norm(gap_out)))
            self._colour_raw_tgt.append(float(np.linalg.norm(gap_tgt)))
            row["colour_gap"] = gap

    def result(self) -> dict[str, float | int | None]:
        """The video's figures (None where nothing was measurable):

        - frames, frames_swapped: frames added, and those with a non-empty mask.
        - flicker: sum over consecutive swapped frame pairs (t-1, t) and over the pixels that
          either frame's mask touched (the union: mask jitter shows exactly at the pixels
          swapped in one frame and not the other, which an intersection would leave out) of
          |output_t - output_t-1|, divided by the same sum on the target. 1.0 = as steady as
          the original; 1.3 = 30 % more frame-to-frame change than the original had. Sums,
          not a mean of per-pair ratios, so that a still shot (target change ~0) cannot blow
          it up. A frame without a face breaks the chain. 1.0 when neither changed at all.
          flicker_output / flicker_target: the two sides as mean |change| per pixel and
          channel in 0-255 levels; flicker_pairs: the number of pairs. A scene cut in the
          target (`is_cut`) breaks the chain too; flicker_cuts: the number of cuts.
        - seam: (mean over the edge band of |dLAB/dn| in the output - the same in the target)
          / mean over the skin ring of |dLAB/dn| in the target, clipped at 0, pooled over the
          swapped frames. dLAB/dn is the derivative across the face outline (along the normal
          of the 0.5 level; delta E per px), so a step from the paste counts fully and skin
          texture running along the edge not at all. It reads as "the edge is X times the skin's
          gradient sharper than the original was there": seam < 0.1 is within 10 % of the
          skin gradient. 0 when the output equals the target; a blurrier edge than the
          original's also reads 0. seam_excess: the numerator (delta E per px).
        - colour_gap: per frame, the delta E 76 length of (mean LAB of the core - mean LAB of
          the skin ring) in the output minus the same vector in the target; averaged over
          frames. Vectors, not lengths, are subtracted: a face shifted to a different hue at
          the same distance from the ring is still a mismatch. The target's own face-to-ring
          difference (lighting, make-up, beard) is thus not counted, and as the ring is
          untouched, this is the LAB shift of the swapped face from the face it replaced.
          0 when the output equals the target; below JND_DELTA_E (2.3) it is invisible.
          colour_gap_output / colour_gap_target: the raw face-to-ring delta E of each.
        - landmark_error: mean of the per-frame landmark_error (see the function) over swapped
          frames with both landmark sets and the face found; landmark_frames: their number.
        - detect_rate: share of the swapped frames with a known output_face_found in which a
          face was found on the output.
        """
        flicker: float | None = None
        if self._flicker_pairs:
            if self._flicker_tgt:
                flicker = self._flicker_out / self._flicker_tgt
            elif not self._flicker_out:
                flicker = 1.0
        n = self._flicker_n
        seam = _seam(self._band_out, self._band_tgt, self._band_n, self._ring_grad, self._ring_n)
        return {
            "frames": self.frames,
            "frames_swapped": self.frames_swapped,
            "flicker": flicker,
            "flicker_output": self._flicker_out / n if n else None,
            "flicker_target": self._flicker_tgt / n if n else None,
            "flicker_pairs": self._flicker_pairs,
            "flicker_cuts": self._flicker_cuts,
            "seam": seam,
            "seam_excess": (self._band_out - self._band_tgt) / self._band_n if self._band_n else None,
            "colour_gap": _mean(self._colour_gap),
            "colour_gap_output": _mean(self._colour_raw_out),
            "colour_gap_target": _mean(self._colour_raw_tgt),
            "landmark_error": _mean(self._landmark_errors),
            "landmark_frames": len(self._landmark_errors),
            "detect_rate": self._found / self._found_known if self._found_known else None,
        }


def _seam(band_out: float, band_tgt: float, band_n: int, ring: float, ring_n: int) -> float | None:
    """max(0, band excess) / ring gradient from sums (None when the ring is empty or flat)."""
    if not band_n or not ring_n or ring <= 0.0:
        return None
    return max(0.0, (band_out - band_tgt) / band_n) / (ring / ring_n)


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None
