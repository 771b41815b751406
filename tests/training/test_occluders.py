"""Synthetic occluders: drawn from the generator's state alone, pasted where their coverage says
(input and target alike), covering the share of faces they claim, textured from the faces'
non-face corners and scikit-image's pictures."""

from __future__ import annotations

import numpy as np
import torch

from facedag.faces.features import face_mask
from facedag.training.occluders import (
    OCCLUDER_DRAWS,
    SIZE_RANGE,
    SKIMAGE_TEXTURES,
    build_bank,
    corner_side,
    draw,
    mask_target,
    nonface_texture,
    paste,
    shapes,
    skimage_texture,
)

S = 64


def faces(n: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"src": torch.randint(0, 256, (n, 3, S, S), generator=g, dtype=torch.uint8),
            "dst": torch.randint(0, 256, (n, 3, S, S), generator=g, dtype=torch.uint8)}


def test_the_same_generator_state_draws_the_same_occluders_and_advances_by_a_fixed_count() -> None:
    bank = build_bank(faces(), S)
    x = torch.rand(8, 3, S, S)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = paste(x, x.clone(), bank, 0.5, g1)
    b = paste(x, x.clone(), bank, 0.5, g2)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert torch.equal(g1.get_state(), g2.get_state())
    # whatever the probability (and so whatever is pasted), the generator moves on alike
    g3 = torch.Generator().manual_seed(5)
    paste(x, x.clone(), bank, 0.0, g3)
    assert torch.equal(g3.get_state(), g1.get_state())
    # a process's share (rows) gets the rows the whole batch would have had
    g4 = torch.Generator().manual_seed(5)
    share = paste(x[4:], x[4:].clone(), bank, 0.5, g4, rows=(4, 8))
    assert all(torch.equal(p[4:], q) for p, q in zip(a, share, strict=True))
    assert torch.equal(g4.get_state(), g1.get_state())


def test_pasted_where_the_coverage_says_in_input_and_target_alike() -> None:
    bank = build_bank(faces(), S)
    x = torch.full((16, 3, S, S), 0.5)
    y = torch.full((16, 3, S, S), 0.25)
    inp, tgt, cover = paste(x, y, bank, 1.0, torch.Generator().manual_seed(1))
    bare = cover == 0
    assert torch.equal(inp[bare.expand_as(inp)], x[bare.expand_as(x)])
    assert torch.equal(tgt[bare.expand_as(tgt)], y[bare.expand_as(y)])
    full = (cover == 1).expand_as(inp)
    assert full.any() and torch.equal(inp[full], tgt[full])  # the same occluder over both
    region = torch.ones(1, 1, S, S)
    assert torch.equal(mask_target(region, cover), 1 - cover)


def test_the_share_and_size_they_claim() -> None:
    n = 400
    u = draw(torch.Generator().manual_seed(3), n)
    assert u.shape == (n, OCCLUDER_DRAWS)
    cover = shapes(u, S)
    area = cover.flatten(1).sum(1) / (S * S)
    assert float(area.min()) > 0.01  # every drawn occluder shows
    assert float(area.max()) < 0.6  # none blankets the face
    hands, bars = area[u[:, 1] < 0.5], area[u[:, 1] >= 0.5]
    assert len(hands) > 150 and len(bars) > 150
    assert float(hands.mean()) > float(bars.mean())  # a palm and fingers cover more than a rod
    # the extent claimed: a hand's spread stays within 1.5 x the largest size of the face side
    _, xs = torch.nonzero(cover[u[:, 1] < 0.5][0, 0] > 0, as_tuple=True)
    assert int(xs.max() - xs.min()) <= 1.5 * SIZE_RANGE[1] * S
    # the probability: about that share of faces gets one
    x = torch.rand(n, 3, 16, 16)
    bank = build_bank(faces(2), 16)
    _, _, c = paste(x, x.clone(), bank, 0.3, torch.Generator().manual_seed(4))
    share = float((c.flatten(1).amax(1) > 0).float().mean())
    assert 0.24 < share < 0.36


def test_textures_come_from_non_face_corners_and_scikit_image_pictures() -> None:
    fs = faces()
    bank = build_bank(fs, S)
    c = corner_side(S)
    region = face_mask(S)
    for corner in (region[:c, :c], region[:c, -c:], region[-c:, :c], region[-c:, -c:]):
        assert not corner.any()  # the corners cut are wholly outside the face region
    kinds = [src.split(":")[0] for src in bank.sources]
    assert set(kinds) == {"nonface", "skimage"}
    assert [src.split(":")[1] for src in bank.sources if src.startswith("skimage")] == list(SKIMAGE_TEXTURES)
    assert "astronaut" not in SKIMAGE_TEXTURES and "grace_hopper" not in SKIMAGE_TEXTURES  # no faces as textures
    for i, src in enumerate(bank.sources):
        if src.startswith("nonface"):
            _, name, k = src.split(":")
            face = fs[name][int(k)].permute(1, 2, 0).numpy()
            assert np.array_equal(bank.images[i].permute(1, 2, 0).numpy(), nonface_texture(face))
            # changing the face inside its region leaves its texture as it was
            inside = face.copy()
            inside[region] = 0
            assert np.array_equal(nonface_texture(inside), nonface_texture(face))
        else:
            assert np.array_equal(bank.images[i].permute(1, 2, 0).numpy(), skimage_texture(src.split(":")[1], S))
