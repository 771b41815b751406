"""Synthetic occluders pasted over training faces, so that the model's mask learns to leave out
what covers a face (a hand, a microphone, a rod, a glasses frame) instead of painting over it.

DeepFaceLab answers "a hand in front of the face" with XSeg and hours of hand-labelling; here the
labels come free: the occluder's shape is known because we draw it. Per training face, with
probability `train.occluder_prob`, one occluder is pasted into the input AND the target at the
same place (after the shared affine of facedag.training.augment), so the RGB target is what a
camera would have seen; its coverage (N, 1, S, S) in [0, 1] goes to the loss, which takes it out
of the RGB weights (the decoder must not learn to paint occluders) and out of the mask's target.

Shapes (signed distance fields on the face's pixel grid, a soft edge of about one pixel):
- hand-like: a palm ellipse and four finger capsules fanned out from its top edge, plus a thumb,
  at a random place, rotation and size (0.35..0.7 of the face side);
- bar-like: one capsule (a rod, a microphone's handle) of random length, thickness and angle,
  with a ball at one end half the time (a microphone's head).
They are centred over the face (x 0.2..0.8, y 0.3..0.95 of the side: mostly the lower face, where
hands and microphones go).

Textures (TextureBank): the aligned training faces' corners, outside the face region (the
footage's own background, hair, clothes), and pictures that ship inside scikit-image (brick,
grass, gravel, coffee, rocket, chelsea: offline, no download). Each paste takes one at a random
offset and flip, with a random per-channel gain and brightness.

Every random number comes from the loop's CPU augmentation generator, a fixed count per sample
(OCCLUDER_DRAWS) whatever the values, drawn for the whole global batch (`rows`, as augment), so
a killed and resumed run draws the same occluders as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from facedag.faces.features import face_mask

SKIMAGE_TEXTURES = ("brick", "grass", "gravel", "coffee", "rocket", "chelsea")
FACES_PER_IDENTITY = 24  # training faces whose corners become textures, evenly spaced
OCCLUDER_DRAWS = 28  # uniform numbers drawn per sample, whatever is used
SIZE_RANGE = (0.35, 0.7)  # the occluder's size, a fraction of the face side
CENTRE_X, CENTRE_Y = (0.2, 0.8), (0.3, 0.95)


@dataclass(frozen=True)
class TextureBank:
    """uint8 (K, 3, S, S) textures and where each came from ("skimage:<name>" or
    "nonface:<identity>:<face index>")."""

    images: torch.Tensor
    sources: tuple[str, ...]

    def to(self, device: str | torch.device) -> TextureBank:
        return TextureBank(self.images.to(device), self.sources)


def corner_side(size: int) -> int:
    """The side of the corner squares cut from an aligned face: a quarter of it, wholly outside
    facedag.faces.features.face_mask (tests/training/test_occluders.py checks it)."""
    return size // 4


def nonface_texture(face: np.ndarray, size: int | None = None) -> np.ndarray:
    """uint8 (size, size, 3) (default: the face's side) from one aligned face's four corners
    (outside the face region), laid out 2 x 2 and scaled up: the footage's own background,
    hair and clothes."""
    s = size or face.shape[0]
    c = corner_side(face.shape[0])
    tiles = np.concatenate([np.concatenate([face[:c, :c], face[:c, -c:]], 1),
                            np.concatenate([face[-c:, :c], face[-c:, -c:]], 1)], 0)  # fmt: skip
    return cv2.resize(tiles, (s, s), interpolation=cv2.INTER_CUBIC)


def skimage_texture(name: str, size: int) -> np.ndarray:
    """uint8 (S, S, 3) from the scikit-image picture `name`: its centre square, scaled to `size`."""
    from skimage import data

    img = np.asarray(getattr(data, name)())
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, 2)
    img = img[:, :, :3]
    h, w = img.shape[:2]
    side = min(h, w)
    img = img[(h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]
    return cv2.resize(np.ascontiguousarray(img), (size, size), interpolation=cv2.INTER_AREA).astype(np.uint8)


def build_bank(faces: dict[str, torch.Tensor], size: int) -> TextureBank:
    """The textures of a training run: each identity's training faces' corners (uint8 (N, 3, S, S)
    per identity, FACES_PER_IDENTITY of them evenly spaced), then the scikit-image pictures."""
    images: list[np.ndarray] = []
    sources: list[str] = []
    for name, imgs in faces.items():
        n = len(imgs)
        for i in sorted({round(k * (n - 1) / max(FACES_PER_IDENTITY - 1, 1)) for k in range(FACES_PER_IDENTITY)}
                        if n else []):  # fmt: skip
            images.append(nonface_texture(imgs[i].permute(1, 2, 0).cpu().numpy(), size))
            sources.append(f"nonface:{name}:{i}")
    for name in SKIMAGE_TEXTURES:
        images.append(skimage_texture(name, size))
        sources.append(f"skimage:{name}")
    stack = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return TextureBank(stack, tuple(sources))


def _capsule(px: torch.Tensor, py: torch.Tensor, a: torch.Tensor, b: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Signed distance (N, S, S) to capsules from a to b (N, 2) of radius r (N)."""
    ax, ay, bx, by = (t.view(-1, 1, 1) for t in (a[:, 0], a[:, 1], b[:, 0], b[:, 1]))
    dx, dy = bx - ax, by - ay
    t = (((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy).clamp_min(1e-9)).clamp(0, 1)
    return torch.hypot(px - ax - t * dx, py - ay - t * dy) - r.view(-1, 1, 1)


def shapes(u: torch.Tensor, size: int) -> torch.Tensor:
    """Coverage (N, 1, S, S) in [0, 1] of the occluders described by uniform draws u (N, OCCLUDER_DRAWS),
    on u's device; coordinates in pixels. Column use: 1 kind, 2-3 centre, 4 angle, 5 size,
    6-15 fingers, 16-18 bar, 19 ball (0 is the apply draw, 20-27 the texture's, see paste)."""
    n = u.shape[0]
    dev, dt = u.device, u.dtype
    coords = torch.arange(size, device=dev, dtype=dt) + 0.5
    py, px = coords.view(1, size, 1), coords.view(1, 1, size)
    s = float(size)
    hand = u[:, 1] < 0.5
    cx = (CENTRE_X[0] + (CENTRE_X[1] - CENTRE_X[0]) * u[:, 2]) * s
    cy = (CENTRE_Y[0] + (CENTRE_Y[1] - CENTRE_Y[0]) * u[:, 3]) * s
    angle = (u[:, 4] - 0.5) * 2 * math.pi
    extent = (SIZE_RANGE[0] + (SIZE_RANGE[1] - SIZE_RANGE[0]) * u[:, 5]) * s
    cos, sin = torch.cos(angle), torch.sin(angle)
    centre = torch.stack([cx, cy], 1)

    def at(along: torch.Tensor, across: torch.Tensor) -> torch.Tensor:
        """Points in the occluder's own frame (along its axis, across it), in px."""
        return centre + torch.stack([along * cos - across * sin, along * sin + across * cos], 1)

    # hand: the palm (an ellipse, semi-axes 0.3 and 0.25 of the extent), fingers from its far edge
    lx = ((px - cx.view(-1, 1, 1)) * cos.view(-1, 1, 1) + (py - cy.view(-1, 1, 1)) * sin.view(-1, 1, 1))
    ly = (-(px - cx.view(-1, 1, 1)) * sin.view(-1, 1, 1) + (py - cy.view(-1, 1, 1)) * cos.view(-1, 1, 1))
    pa, pb = (0.3 * extent).view(-1, 1, 1), (0.25 * extent).view(-1, 1, 1)
    hand_d = (torch.hypot(lx / pa, ly / pb) - 1.0) * torch.minimum(pa, pb)
    finger_r = 0.07 * extent
    for k in range(4):
        spread = (k - 1.5) * 0.22 + (u[:, 6 + k] - 0.5) * 0.25  # radians off the axis
        length = (0.35 + 0.3 * u[:, 10 + k]) * extent
        base = at(0.25 * extent, (k - 1.5) * 0.14 * extent)
        tip = base + torch.stack([torch.cos(angle + spread), torch.sin(angle + spread)], 1) * length[:, None]
        hand_d = torch.minimum(hand_d, _capsule(px, py, base, tip, finger_r))
    thumb_side = torch.where(u[:, 14] < 0.5, -1.0, 1.0).to(dt)
    thumb_base = at(0.0 * extent, thumb_side * 0.22 * extent)
    thumb_dir = angle + thumb_side * (0.9 + 0.5 * u[:, 15])
    thumb_tip = thumb_base + torch.stack([torch.cos(thumb_dir), torch.sin(thumb_dir)], 1) * (0.35 * extent)[:, None]
    hand_d = torch.minimum(hand_d, _capsule(px, py, thumb_base, thumb_tip, 1.1 * finger_r))

    # bar: a capsule through the centre, 1.2..2.4 x the extent long, 0.04..0.12 of the side thick
    half = (0.6 + 0.6 * u[:, 16]) * extent
    radius = (0.02 + 0.04 * u[:, 17]) * s
    offset = (u[:, 18] - 0.5) * extent  # how far along the axis the bar's middle sits from the centre
    a, b = at(offset - half, torch.zeros_like(half)), at(offset + half, torch.zeros_like(half))
    bar_d = _capsule(px, py, a, b, radius)
    ball = u[:, 19] < 0.5
    head = _capsule(px, py, b, b, torch.where(ball, 2.2 * radius, torch.zeros_like(radius)))
    bar_d = torch.where(ball.view(-1, 1, 1), torch.minimum(bar_d, head), bar_d)

    d = torch.where(hand.view(-1, 1, 1), hand_d, bar_d)
    return (0.5 - d).clamp(0.0, 1.0).view(n, 1, size, size)  # a one-pixel soft edge


def draw(gen: torch.Generator, total: int) -> torch.Tensor:
    """(total, OCCLUDER_DRAWS) uniform numbers from `gen`: the same count whatever they say."""
    return torch.rand((total, OCCLUDER_DRAWS), generator=gen)


def paste(inputs: torch.Tensor, targets: torch.Tensor, bank: TextureBank, prob: float, gen: torch.Generator,
          rows: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs, targets, coverage (N, 1, S, S)): an occluder pasted, with probability `prob` per
    face, at the same place in both (N, 3, S, S) float [0, 1] batches; coverage is 0 for faces
    left bare. `rows` as facedag.training.augment.augment: draws for the whole global batch."""
    n, _, s, _ = inputs.shape
    start, total = rows if rows is not None else (0, n)
    u = draw(gen, total)[start : start + n].to(inputs.device, non_blocking=True)
    applied = (u[:, 0] < prob).to(inputs.dtype).view(n, 1, 1, 1)
    cover = shapes(u.to(inputs.dtype), s) * applied
    k = len(bank.sources)
    idx = (u[:, 20] * k).long().clamp_max(k - 1)
    tex = bank.images.to(inputs.device).index_select(0, idx).to(inputs.dtype) / 255.0
    # a random offset (the texture wraps round) and flip, a per-channel gain and a brightness shift
    shifts = (u[:, 21:23] * s).long().tolist()
    tex = torch.stack([torch.roll(t, (dy, dx), dims=(1, 2)) for t, (dy, dx) in zip(tex, shifts, strict=True)])
    tex = torch.where((u[:, 23] < 0.5).view(n, 1, 1, 1), tex.flip(3), tex)
    gain = (0.6 + 0.8 * u[:, 24:27]).view(n, 3, 1, 1)
    tex = (tex * gain + (u[:, 27] - 0.5).view(n, 1, 1, 1) * 0.3).clamp(0.0, 1.0)
    return (inputs * (1 - cover) + tex * cover, targets * (1 - cover) + tex * cover, cover)


def mask_target(region: torch.Tensor, cover: torch.Tensor) -> torch.Tensor:
    """The learned mask's target: the face region (N or 1, 1, S, S) in [0, 1] minus the occluder."""
    return region * (1.0 - cover)


def template_region(size: int) -> np.ndarray:
    """uint8 (S, S) face region of a face aligned by five points only: the template's face mask."""
    return face_mask(size).astype(np.uint8) * 255
