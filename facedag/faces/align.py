"""Alignment geometry: the canonical 5-point template, similarity transforms, warps and crops.

Conventions: points are (x, y) in pixels with pixel centres at integer coordinates (OpenCV's
`warpAffine` convention), and a "matrix" is a 2x3 affine `M` with `dst = M[:, :2] @ src + M[:, 2]`.
The aligned matrix of a face maps FRAME px -> ALIGNED px; convert (a later stage) pastes a
generated face back with its inverse (`invert_affine`).

The template
------------
insightface's ArcFace template (the 112x112 5-point reference also used by DeepFaceLab's and
faceswap's 5-point paths) frames the face tightly: eyes at 46 % of the height, mouth at 82 %,
the chin cut off. For face swapping we want the *whole face* (DeepFaceLab's "whole_face"):
brows to chin, cheeks included, a little forehead. So `template(size)` is ArcFace's template
in unit coordinates, shrunk by `TEMPLATE_SCALE` = 0.75 about the point (0.5, 0.54), then
scaled to `size`. In unit coordinates this puts the eyes at y = 0.44, 0.236 apart, the nose
tip at 0.58 and the mouth corners at 0.71, which leaves room for the chin (about 0.92) and
the forehead (about 0.12) on a frontal face.

Crops between stages
--------------------
extract stores a *loose crop* per face: an axis-aligned square around the aligned face's
footprint in the frame, `LOOSE_MARGIN` times the side of the aligned square (>= sqrt 2, so any
roll fits), downscaled when the face is larger than needed: the crop is at most
`LOOSE_MARGIN * face_size` px, so warping it to `face_size` never upsamples a face that the
frame had in more detail. Its `crop_matrix` (frame px -> crop px, scale and shift only) is
stored with it; align composes `aligned_matrix @ inverse(crop_matrix)` to warp the crop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

# insightface / ArcFace 5-point template for a 112x112 face (x, y), image-left eye first.
ARCFACE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
TEMPLATE_SCALE = 0.75
TEMPLATE_CENTER = (0.5, 0.54)
LOOSE_MARGIN = 1.5


def template(size: int) -> np.ndarray:
    """The canonical 5 landmarks (float64, (5, 2)) for an aligned face of `size` x `size` px."""
    unit = (ARCFACE_112 + 0.5) / 112.0  # pixel centres -> unit square
    unit = (unit - TEMPLATE_CENTER) * TEMPLATE_SCALE + (0.5, 0.5)
    return unit * size - 0.5


def similarity_matrix(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift; no reflection) src -> dst.

    Umeyama (1991), "Least-squares estimation of transformation parameters between two
    point patterns", with optional per-point `weights` (the dense mesh weighs its stable
    points). Returns a 2x3 float64 matrix. Raises ValueError on degenerate input (fewer than
    2 points, all points equal, or non-finite values).
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2:
        raise ValueError("need two point sets of the same shape with at least 2 points")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("landmarks are not finite")
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != (len(src),) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be finite, non-negative and not all zero")
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    sc, dc = src - mu_s, dst - mu_d
    var_s = float(w @ (sc**2).sum(1))
    if var_s < 1e-12:
        raise ValueError("landmarks are degenerate (all at one point)")
    cov = (dc * w[:, None]).T @ sc
    u, d, vt = np.linalg.svd(cov)
    s = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        s[-1] = -1.0
    rot = u @ np.diag(s) @ vt
    scale = float((d * s).sum() / var_s)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError("landmarks are degenerate")
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix (float64)."""
    return cv2.invertAffineTransform(np.asarray(m, dtype=np.float64))


def compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The 2x3 matrix of `a` after `b` (first b, then a)."""
    a3 = np.vstack([np.asarray(a, np.float64), (0, 0, 1)])
    b3 = np.vstack([np.asarray(b, np.float64), (0, 0, 1)])
    return (a3 @ b3)[:2]


def transform_points(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (N, 2) points."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    m = np.asarray(m, dtype=np.float64)
    return p @ m[:, :2].T + m[:, 2]


def matrix_scale(m: np.ndarray) -> float:
    """The linear scale of a similarity matrix."""
    m = np.asarray(m, dtype=np.float64)
    return float(math.sqrt(abs(np.linalg.det(m[:, :2]))))


def roll_degrees(m: np.ndarray) -> float:
    """The rotation angle of a similarity matrix, degrees."""
    return float(math.degrees(math.atan2(m[1, 0], m[0, 0])))


def aligned_matrix(landmarks: np.ndarray, size: int) -> np.ndarray:
    """The similarity (frame px -> aligned px) taking `landmarks` to `template(size)`."""
    return similarity_matrix(landmarks, template(size))


def check_landmarks(landmarks: np.ndarray, min_eye_distance: float = 2.0) -> None:
    """Raise ValueError for landmarks that cannot give a sensible alignment.

    Non-finite values, eyes closer than `min_eye_distance` px, or a mirrored face (the
    image-left eye to the right of the image-right eye after undoing roll is fine; a
    reflection, i.e. the mouth on the other side of the eye line from the nose's side, is not).
    """
    lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    if lm.shape != (5, 2) or not np.isfinite(lm).all():
        raise ValueError("need 5 finite landmarks")
    eye = lm[1] - lm[0]
    if float(np.hypot(*eye)) < min_eye_distance:
        raise ValueError(f"eyes are closer than {min_eye_distance:.1f} px")
    mouth = (lm[3] + lm[4]) / 2 - (lm[0] + lm[1]) / 2
    # the mouth must be on the "down" side of the eye line (cross product sign, y down)
    if eye[0] * mouth[1] - eye[1] * mouth[0] <= 0:
        raise ValueError("landmarks are mirrored or collapsed (mouth not below the eye line)")


def align_face(image: np.ndarray, m: np.ndarray, size: int, border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """Warp `image` with `m` (image px -> aligned px) to a `size` x `size` face.

    Downscales with an area-like prefilter: when the matrix shrinks by more than 2x, the image
    is first reduced with INTER_AREA (and `m` adjusted), so fine texture does not alias.
    """
    m = np.asarray(m, dtype=np.float64)
    scale = matrix_scale(m)
    if scale < 0.5:
        f = 1.0 / scale / 1.5  # keep 1.5x the final resolution for the bilinear warp
        h, w = image.shape[:2]
        nw, nh = max(1, round(w / f)), max(1, round(h / f))
        small = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
        # the resize maps x -> (x + 0.5) * nw / w - 0.5
        s = np.array([[nw / w, 0, 0.5 * nw / w - 0.5], [0, nh / h, 0.5 * nh / h - 0.5]])
        m = compose(m, invert_affine(s))
        image = small
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)


def loose_crop_box(landmarks: np.ndarray, face_size: int, margin: float = LOOSE_MARGIN) -> tuple[float, float, float]:
    """(cx, cy, side) in frame px of the square loose crop for a face with these landmarks."""
    m = aligned_matrix(landmarks, face_size)
    inv = invert_affine(m)
    c = transform_points(np.array([[(face_size - 1) / 2, (face_size - 1) / 2]]), inv)[0]
    side = face_size / matrix_scale(m) * margin
    return float(c[0]), float(c[1]), float(side)


def loose_crop(
    frame: np.ndarray, landmarks: np.ndarray, face_size: int, margin: float = LOOSE_MARGIN
) -> tuple[np.ndarray, np.ndarray]:
    """Cut the loose crop of a face from a frame: (crop image, crop_matrix frame px -> crop px).

    The crop is square, `margin` x the aligned square's side in the frame (so any roll of the
    aligned square fits), and at most `ceil(margin * face_size)` px: larger faces are reduced
    with INTER_AREA. Parts outside the frame are black.
    """
    cx, cy, side = loose_crop_box(landmarks, face_size, margin)
    h, w = frame.shape[:2]
    x0 = math.floor(cx - side / 2)
    y0 = math.floor(cy - side / 2)
    n = max(2, math.ceil(side))
    out = min(n, math.ceil(margin * face_size))
    # integer source window [x0, x0 + n) x [y0, y0 + n), padded where it leaves the frame
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x0 + n), min(h, y0 + n)
    if sx1 <= sx0 or sy1 <= sy0:
        raise ValueError("the face's crop lies outside the frame")
    window = frame[sy0:sy1, sx0:sx1]
    pads = (sy0 - y0, y0 + n - sy1, sx0 - x0, x0 + n - sx1)
    if any(pads):
        window = cv2.copyMakeBorder(window, *pads, cv2.BORDER_CONSTANT, value=0)
    crop = cv2.resize(window, (out, out), interpolation=cv2.INTER_AREA) if out != n else np.ascontiguousarray(window)
    k = out / n
    # pixel centre convention: x_crop = (x - x0 + 0.5) * k - 0.5
    cm = np.array([[k, 0.0, (0.5 - x0) * k - 0.5], [0.0, k, (0.5 - y0) * k - 0.5]])
    return crop, cm


def face_from_crop(
    crop: np.ndarray, crop_matrix: np.ndarray, landmarks: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Align a face from its loose crop: (aligned image, matrix FRAME px -> aligned px).

    `landmarks` are in frame px; the returned matrix is the frame's, so that convert can paste
    back into the frame with its inverse.
    """
    m = aligned_matrix(landmarks, size)
    img = align_face(crop, compose(m, invert_affine(crop_matrix)), size)
    return img, m


def as_matrix(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """A 2x3 float64 matrix from 6 numbers (row-major), as stored in the tables."""
    m = np.asarray(values, dtype=np.float64).reshape(2, 3)
    if not np.isfinite(m).all():
        raise ValueError("matrix is not finite")
    return m
