"""`liae`: one shared encoder, a shared intermediate and one intermediate per identity, one
shared decoder (DeepFaceLab's "LIAE" layout, generalised from its two identities to N).

DeepFaceLab's SAEHD describes LIAE as transferring pose, expression and lighting better than
`df`, at some cost in likeness: the decoder is shared, so it cannot keep an identity's look in
its own weights; the identity lives in a code. Here the code of a face for identity I is the
concatenation of the shared intermediate's output (what every identity has in common: pose,
expression, light) and identity I's own intermediate's output; training rebuilds each
identity's faces from its own code, and swapping decodes a `dst` face's encoding through the
shared intermediate and `src`'s intermediate.

For a face of side S (a multiple of 16), widths w (encoder) and d (decoder), bottleneck b:

  encoder:  4 x [conv 5x5 stride 2 + LeakyReLU]  3 -> w -> 2w -> 4w -> 8w, flattened   (S/16 px)
  inter_*:  Linear(8w * (S/16)^2, b) -> Linear(b, 4d * (S/16)^2)
            -> upscale (conv 3x3 -> pixel shuffle x2)  4d -> 4d                         (S/8 px)
            one shared (`inter_shared`), one per identity (`inters[I]`)
  code:     concat(inter_shared(e), inters[I](e))                                       8d at S/8
  decoder:  df's (facedag.training.layouts.df.Decoder): 3 x upscale 8d -> 4d -> 2d -> d, a
            residual block, RGB and (cfg.mask) mask heads, the mask's with the input's
            full-resolution features (_blocks.MaskSkip)                                 (S px)
"""

from __future__ import annotations

import torch
from torch import nn

from facedag.training.layouts._blocks import MaskSkip, Upscale, act, mask_skip_width
from facedag.training.layouts.df import Decoder
from facedag.training.model import DOWNSAMPLES, FaceSwapModel, ModelConfig


class Encoder(nn.Module):
    """Shared: convs down to S/16, flattened (the intermediates take it from there)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        w = cfg.encoder_width
        chans = [3, w, 2 * w, 4 * w, 8 * w]
        layers: list[nn.Module] = []
        for i in range(DOWNSAMPLES):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 5, stride=2, padding=2), act()]
        self.convs = nn.Sequential(*layers)
        self.features = chans[-1] * (cfg.face_size >> DOWNSAMPLES) ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x).flatten(1)


class Inter(nn.Module):
    """The dense bottleneck and one upscale: (N, features) -> (N, 4d, S/8, S/8)."""

    def __init__(self, cfg: ModelConfig, features: int) -> None:
        super().__init__()
        self.side = cfg.face_size >> DOWNSAMPLES
        self.ch = 4 * cfg.decoder_width
        self.down = nn.Linear(features, cfg.bottleneck)
        self.up = nn.Linear(cfg.bottleneck, self.ch * self.side * self.side)
        self.upscale = Upscale(self.ch, self.ch)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.upscale(self.up(self.down(e)).view(-1, self.ch, self.side, self.side))


class Model(FaceSwapModel):
    """The shared encoder, shared intermediate and decoder, and an intermediate per identity."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.encoder = Encoder(cfg)
        self.inter_shared = Inter(cfg, self.encoder.features)
        self.inters = nn.ModuleDict({name: Inter(cfg, self.encoder.features) for name in cfg.identities})
        self.decoder = Decoder(cfg)
        self.mask_skip = MaskSkip(mask_skip_width(cfg.decoder_width)) if cfg.mask else None

    def skip(self, x: torch.Tensor) -> torch.Tensor | None:
        return None if self.mask_skip is None else self.mask_skip(x)

    def code(self, e: torch.Tensor, identity: str) -> torch.Tensor:
        """The decoder's input for encodings `e` as `identity`: (N, 8d, S/8, S/8)."""
        return torch.cat([self.inter_shared(e), self.inters[self.check_identity(identity)](e)], 1)

    def forward_masked(self, x: torch.Tensor, identity: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.decoder(self.code(self.encoder(x), identity), self.skip(x))

    def forward_all(self, xs: list[torch.Tensor], together: bool | None = None,
                    ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:  # fmt: skip
        """`together` (default: on a GPU): the encoder, the shared intermediate and the decoder
        each run once at the summed batch, the identities' intermediates on their own shares.
        Otherwise each identity passes on its own (faster on a CPU, as df.Model.forward_all says)."""
        if not (xs[0].is_cuda if together is None else together):
            return super().forward_all(xs)
        sizes = [len(x) for x in xs]
        x = torch.cat(xs) if len(xs) > 1 else xs[0]
        e = self.encoder(x)
        shared = self.inter_shared(e)
        own = torch.cat([self.inters[name](ei) for ei, name in zip(e.split(sizes), self.cfg.identities, strict=True)])
        rgb, mask = self.decoder(torch.cat([shared, own], 1), self.skip(x))
        masks = [None] * len(xs) if mask is None else list(mask.split(sizes))
        return list(zip(rgb.split(sizes), masks, strict=True))
