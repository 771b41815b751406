"""Layers the layouts share."""

from __future__ import annotations

import torch
from torch import nn


def act() -> nn.Module:
    return nn.LeakyReLU(0.1, inplace=True)


class Upscale(nn.Sequential):
    """conv 3x3 to 4x the channels, then pixel shuffle: 2x the side without checkerboard-prone transposed convs."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, cout * 4, 3, padding=1), act(), nn.PixelShuffle(2))


class Residual(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), act(), nn.Conv2d(ch, ch, 3, padding=1))
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class MaskSkip(nn.Sequential):
    """The mask head's view of the input itself: three 3x3 convs at full resolution, shared by
    every identity (what covers a face is a property of the input frame, not of who is painted).

    Why: everything else the decoder knows passes through the dense bottleneck (128 numbers in
    the demo), which has room for the pose and the face but not for where a hand's edge runs;
    with only the decoder's features, 300 demo steps learned the face oval and no occluder
    (benchmarks/bench_occluder.py). Skin against a striped sleeve or a microphone is local
    texture, which a few full-resolution convs see at once (as XSeg's U-Net skips do)."""

    def __init__(self, ch: int) -> None:
        super().__init__(nn.Conv2d(3, ch, 3, padding=1), act(), nn.Conv2d(ch, ch, 3, padding=1), act(),
                         nn.Conv2d(ch, ch, 3, padding=1), act())


def mask_skip_width(decoder_width: int) -> int:
    """8 channels whatever the width: enough to tell skin from a sleeve, and at full resolution
    a wider skip costs GPU memory (d/2 channels put the 256 preset past an 8 GB card)."""
    return 8
