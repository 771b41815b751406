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
