"""Augmentation: shapes and range, replayable from the generator state, neutral settings change nothing."""

from __future__ import annotations

import torch

from facedag.training.augment import AugmentConfig, augment
from facedag.training.losses import weight_map

S = 32


def batch() -> torch.Tensor:
    return torch.rand(4, 3, S, S, generator=torch.Generator().manual_seed(0))


def test_shapes_range_and_warp_only_on_input() -> None:
    x, w = batch(), weight_map(S)
    inp, tgt, ww = augment(x, w, AugmentConfig(warp=0.05), torch.Generator().manual_seed(1))
    assert inp.shape == tgt.shape == x.shape and ww.shape == (4, 1, S, S)
    assert float(inp.min()) >= 0.0 and float(inp.max()) <= 1.0
    assert not torch.equal(inp, tgt)  # the random warp moves the input only


def test_replayable_from_generator_state() -> None:
    x, w = batch(), weight_map(S)
    g = torch.Generator().manual_seed(5)
    augment(x, w, AugmentConfig(), g)
    state = g.get_state()
    first = augment(x, w, AugmentConfig(), g)
    g2 = torch.Generator()
    g2.set_state(state)
    again = augment(x, w, AugmentConfig(), g2)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


def test_neutral_settings_and_flip() -> None:
    x, w = batch(), weight_map(S)
    neutral = AugmentConfig(warp=0.0, flip=0.0, colour_shift=0.0, light_shift=0.0)
    inp, tgt, ww = augment(x, w, neutral, torch.Generator().manual_seed(2))
    assert torch.allclose(inp, x, atol=1e-5) and torch.allclose(tgt, x, atol=1e-5)
    assert torch.allclose(ww, w.expand(4, 1, S, S), atol=1e-5)
    flipped = AugmentConfig(warp=0.0, flip=1.0, colour_shift=0.0, light_shift=0.0)
    _, tgt, _ = augment(x, w, flipped, torch.Generator().manual_seed(2))
    assert torch.allclose(tgt, x.flip(-1), atol=1e-5)
