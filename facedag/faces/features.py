"""Per-face features: head pose, lighting, sharpness and expression proxies.

Head pose
---------
`head_pose(landmarks, frame_shape)` solves PnP (`cv2.solvePnP`) between the 5 landmarks and
`MODEL_3D`, a mean 3D 5-point face in mm (x to the image right, y down, z away from the
camera, nose tip at the origin). Its proportions are adult anthropometric means: eyes 63 mm
apart, nose tip 45 mm below the eye line, mouth corners 68 mm below it and 50 mm apart, which
is also where RetinaFace puts them on frontal portraits, so a frontal face reads about 0
pitch. The camera is a pinhole from the frame size: focal length = the frame's long side
(about 53 degrees of view along it), principal point at the frame centre, no distortion.

Sign convention (degrees, tested on horizontally flipped images):
- yaw > 0 when the face turns toward the image right (the nose points right);
- pitch > 0 when the face looks up;
- roll > 0 when the eye line turns clockwise on screen (the image-right eye is lower);
  roll is read from the 2D eye line, not from PnP.
A horizontal flip negates yaw and roll and keeps pitch. Yaw and pitch come from the face's
forward vector (the direction its nose points) in camera coordinates, which keeps them well
defined without an Euler-order convention: yaw = atan2(f_x, -f_z), pitch = atan2(-f_y, hypot(f_x, f_z)).
Five points give a coarse pose (a few degrees of noise, and large |yaw| is compressed); it is
used for binning and coverage, not for 3D work.

Lighting, sharpness, expression
-------------------------------
All on the aligned face (RGB uint8 from `facedag.faces.align`, whose template fixes where the face
is), over a fixed elliptical face mask: see `lighting`, `sharpness` and `expression`.
`mouth_open` and `eyes_open` are PROXIES: only 5 landmarks exist, so they measure image
content at the template's mouth and eye positions (dark pixels between the mouth corners,
luma contrast at the eyes), not lips or lids. They rank faces within a clip well enough to
spread the dataset over expressions; they are not calibrated measurements.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import cv2
import numpy as np

from facedag.faces.align import template

# Mean 3D positions (mm) of RetinaFace's 5 points; camera-like axes (x right, y down, z away).
MODEL_3D = np.array(
    [
        [-31.5, -45.0, 28.0],  # eye on the image left (the subject's right eye)
        [31.5, -45.0, 28.0],  # eye on the image right
        [0.0, 0.0, 0.0],  # nose tip
        [-25.0, 23.0, 26.0],  # mouth corner, image left
        [25.0, 23.0, 26.0],  # mouth corner, image right
    ],
    dtype=np.float64,
)


def camera_matrix(frame_shape: Sequence[int]) -> np.ndarray:
    """Pinhole intrinsics for a frame of shape (H, W, ...): f = long side, centre of the frame."""
    h, w = int(frame_shape[0]), int(frame_shape[1])
    f = float(max(h, w))
    return np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]], dtype=np.float64)


def head_pose(landmarks: np.ndarray, frame_shape: Sequence[int]) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees; see the module docstring for the signs.

    Raises ValueError when PnP fails or the landmarks are not finite.
    """
    pts = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    if not np.isfinite(pts).all():
        raise ValueError("landmarks are not finite")
    cam = camera_matrix(frame_shape)
    eye_d = float(np.hypot(*(pts[1] - pts[0])))
    model_eye_d = float(MODEL_3D[1, 0] - MODEL_3D[0, 0])
    z0 = cam[0, 0] * model_eye_d / max(eye_d, 1e-3)
    # initial guess: frontal, at the distance the eye spacing implies, in front of the nose
    nose = pts[2]
    tvec = np.array([[(nose[0] - cam[0, 2]) * z0 / cam[0, 0]], [(nose[1] - cam[1, 2]) * z0 / cam[1, 1]], [z0]])
    rvec = np.zeros((3, 1))
    ok, rvec, tvec = cv2.solvePnP(
        MODEL_3D, pts, cam, None, rvec=rvec, tvec=tvec, useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE
    )
    if not ok or not np.isfinite(rvec).all():
        raise ValueError("solvePnP failed")
    rot, _ = cv2.Rodrigues(rvec)
    fwd = rot @ np.array([0.0, 0.0, -1.0])  # where the nose points, camera coordinates
    yaw = math.degrees(math.atan2(fwd[0], -fwd[2]))
    pitch = math.degrees(math.atan2(-fwd[1], math.hypot(fwd[0], fwd[2])))
    eye = pts[1] - pts[0]
    roll = math.degrees(math.atan2(eye[1], eye[0]))
    return float(yaw), float(pitch), float(roll)


def luma(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of an RGB uint8 image (OpenCV's RGB2GRAY), float32 in 0..255."""
    if rgb.ndim == 2:
        return rgb.astype(np.float32)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)


@lru_cache(maxsize=8)
def face_mask(size: int) -> np.ndarray:
    """Boolean (size, size) ellipse over the inner face of an aligned face (brows to chin, cheek to cheek)."""
    t = template(size)
    eye_d = float(t[1, 0] - t[0, 0])
    cx = float(t[:, 0].mean())
    cy = float((t[0, 1] + t[3, 1]) / 2)
    ax, ay = 1.05 * eye_d, 1.35 * eye_d
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    m = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1.0
    m.flags.writeable = False
    return m


def _mcCamy_cct(rgb_mean: np.ndarray) -> float:
    """Correlated colour temperature (K) of a mean sRGB colour by McCamy's formula, clipped."""
    c = np.clip(np.asarray(rgb_mean, np.float64) / 255.0, 1e-6, 1.0)
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    x_, y_, z_ = (
        np.array(
            [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]],
        )
        @ lin
    )
    s = x_ + y_ + z_
    if s <= 1e-9:
        return float("nan")
    x, y = x_ / s, y_ / s
    n = (x - 0.3320) / (0.1858 - y)
    cct = 449.0 * n**3 + 3525.0 * n**2 + 6823.3 * n + 5520.33
    return float(np.clip(cct, 1000.0, 25000.0))


def lighting(aligned: np.ndarray, y: np.ndarray | None = None) -> dict[str, float]:
    """Lighting of an aligned RGB face, over the face mask.

    - luminance: mean luma, 0..1.
    - asymmetry: (mean luma of the image-left half - image-right half) / mean, about -1..1;
      > 0 when the light comes from the image left.
    - contrast: standard deviation of luma, 0..1.
    - warmth: mean (R - B) / (R + B), > 0 warm (tungsten, sunset), < 0 cool (shade, daylight).
    - cct: McCamy's correlated colour temperature of the mean colour, kelvin (clipped 1000..25000);
      a coarse proxy on skin, which is warm by itself.
    """
    size = aligned.shape[0]
    mask = face_mask(size)
    if y is None:
        y = luma(aligned)
    vals = y[mask]
    mean = float(vals.mean()) if vals.size else 0.0
    half = size // 2
    left = y[:, :half][mask[:, :half]]
    right = y[:, size - half :][mask[:, size - half :]]
    asym = (float(left.mean()) - float(right.mean())) / max(mean, 1.0) if left.size and right.size else 0.0
    rgb = aligned[mask].astype(np.float32)
    r, b = rgb[:, 0].mean(), rgb[:, 2].mean()
    warmth = float((r - b) / max(r + b, 1.0))
    return {
        "luminance": mean / 255.0,
        "asymmetry": float(asym),
        "contrast": float(vals.std()) / 255.0 if vals.size else 0.0,
        "warmth": warmth,
        "cct": _mcCamy_cct(rgb.mean(0)),
    }


def sharpness(aligned: np.ndarray, y: np.ndarray | None = None) -> float:
    """Variance of the Laplacian of the luma over the face mask (higher = sharper).

    On the aligned face, so the figure is comparable across faces of one face_size.
    """
    if y is None:
        y = luma(aligned)
    lap = cv2.Laplacian(y, cv2.CV_32F, ksize=1)
    mask = face_mask(aligned.shape[0])
    return float(lap[mask].var())


@lru_cache(maxsize=8)
def _regions(size: int) -> tuple[tuple[slice, slice], tuple[slice, slice], tuple[slice, slice], tuple[slice, slice]]:
    t = template(size)
    eye_d = float(t[1, 0] - t[0, 0])

    def box(cx: float, cy: float, hw: float, hh: float) -> tuple[slice, slice]:
        y0, y1 = max(0, round(cy - hh)), min(size, round(cy + hh) + 1)
        x0, x1 = max(0, round(cx - hw)), min(size, round(cx + hw) + 1)
        return slice(y0, y1), slice(x0, x1)

    mouth_y = float((t[3, 1] + t[4, 1]) / 2)
    mouth_w = float(t[4, 0] - t[3, 0])
    mouth = box(float((t[3, 0] + t[4, 0]) / 2), mouth_y + 0.06 * eye_d, 0.32 * mouth_w, 0.28 * eye_d)
    eye_l = box(float(t[0, 0]), float(t[0, 1]), 0.28 * eye_d, 0.16 * eye_d)
    eye_r = box(float(t[1, 0]), float(t[1, 1]), 0.28 * eye_d, 0.16 * eye_d)
    cheeks = box(float(t[2, 0]), float(t[2, 1]) - 0.1 * eye_d, 0.7 * eye_d, 0.15 * eye_d)
    return mouth, eye_l, eye_r, cheeks


def expression(aligned: np.ndarray, y: np.ndarray | None = None) -> dict[str, float]:
    """Expression PROXIES on an aligned face (see the module docstring), each about 0..1.

    - mouth_open: the fraction of pixels in the box between the mouth corners that are darker
      than 55 % of the skin's luma (the skin level is the median luma under the eyes, beside
      the nose): an open mouth shows a dark cavity there, a closed one shows lips.
    - eyes_open: the luma contrast (standard deviation) in boxes at both eyes relative to the
      skin level, scaled so a typical open eye is near 1 and clipped to 0..1.5: open eyes show
      sclera, iris and pupil, closed lids are smooth skin.
    """
    if y is None:
        y = luma(aligned)
    mouth, eye_l, eye_r, cheeks = _regions(aligned.shape[0])
    skin = float(np.median(y[cheeks])) if y[cheeks].size else float(np.median(y))
    skin = max(skin, 8.0)
    m = y[mouth]
    mouth_open = float((m < 0.55 * skin).mean()) if m.size else 0.0
    eyes = np.concatenate([y[eye_l].ravel(), y[eye_r].ravel()])
    eyes_open = float(np.clip(eyes.std() / skin / 0.25, 0.0, 1.5)) if eyes.size else 0.0
    return {"mouth_open": mouth_open, "eyes_open": eyes_open}


def face_features(aligned: np.ndarray) -> dict[str, float]:
    """lighting + sharpness + expression of an aligned face, sharing one luma conversion."""
    y = luma(aligned)
    out = lighting(aligned, y)
    out["sharpness"] = sharpness(aligned, y)
    out.update(expression(aligned, y))
    return out
