"""`df`: one shared encoder, one decoder per identity (DeepFaceLab's "DF" layout, encoder and
"inter" shared).

Training teaches every decoder to rebuild its own identity's faces from the shared latent code;
because the code is shared, it comes to describe pose, expression and lighting, and the
decoder supplies the identity. Swapping is then: encode a `dst` face, decode with `src`'s
decoder.

For a face of side S (S a multiple of 16, 64..256 in use, 32 in tests), widths w (encoder)
and d (decoder), bottleneck b:

  encoder: 4 x [conv 5x5 stride 2 + LeakyReLU]  3 -> w -> 2w -> 4w -> 8w     (S/16 px)
           flatten -> Linear(8w * (S/16)^2, b) -> Linear(b, 8d * (S/16)^2)   (the bottleneck)
           upscale (conv 3x3 -> pixel shuffle x2)  8d -> 8d                   (S/8 px)  = z
  decoder: 3 x upscale  8d -> 4d -> 2d -> d, a residual block, then two heads: conv 5x5 -> 3,
           sigmoid (RGB, S px) and, with cfg.mask, conv 5x5 -> 1, sigmoid on those d channels
           and 8 channels of the input seen by 3 full-resolution 3x3 convs
           (_blocks.MaskSkip, shared): the mask, where the face shows, occluders left out
"""

from __future__ import annotations

import torch
from torch import nn

from facedag.training.layouts._blocks import MaskSkip, Residual, Upscale, act, mask_skip_width
from facedag.training.model import DOWNSAMPLES, FaceSwapModel, ModelConfig


class Encoder(nn.Module):
    """Shared: convs down to S/16, the dense bottleneck, and one upscale to S/8 (the latent map z)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        w, d = cfg.encoder_width, cfg.decoder_width
        chans = [3, w, 2 * w, 4 * w, 8 * w]
        layers: list[nn.Module] = []
        for i in range(DOWNSAMPLES):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 5, stride=2, padding=2), act()]
        self.convs = nn.Sequential(*layers)
        self.side = cfg.face_size >> DOWNSAMPLES
        self.inter_ch = 8 * d
        self.down = nn.Linear(chans[-1] * self.side * self.side, cfg.bottleneck)
        self.up = nn.Linear(cfg.bottleneck, self.inter_ch * self.side * self.side)
        self.upscale = Upscale(self.inter_ch, self.inter_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.convs(x).flatten(1)
        h = self.up(self.down(h)).view(-1, self.inter_ch, self.side, self.side)
        return self.upscale(h)


class Decoder(nn.Module):
    """Three upscales from S/8 to S, a residual block, and (RGB, mask) in [0, 1] (mask None
    without cfg.mask). The mask head reads the RGB head's features (where the decoder puts the
    face) beside the input's own full-resolution features `skip` (MaskSkip: what covers it).
    `liae` uses this decoder too."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.decoder_width
        self.body = nn.Sequential(Upscale(8 * d, 4 * d), Upscale(4 * d, 2 * d), Upscale(2 * d, d), Residual(d))
        self.rgb = nn.Conv2d(d, 3, 5, padding=2)
        self.mask = nn.Conv2d(d + mask_skip_width(d), 1, 5, padding=2) if cfg.mask else None

    def forward(self, z: torch.Tensor, skip: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.body(z)
        if self.mask is None or skip is None:
            return torch.sigmoid(self.rgb(h)), None
        return torch.sigmoid(self.rgb(h)), torch.sigmoid(self.mask(torch.cat([h, skip.to(h.dtype)], 1)))


class Model(FaceSwapModel):
    """The shared encoder and a decoder per identity (in cfg.identities order)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.encoder = Encoder(cfg)
        self.decoders = nn.ModuleDict({name: Decoder(cfg) for name in cfg.identities})
        self.mask_skip = MaskSkip(mask_skip_width(cfg.decoder_width)) if cfg.mask else None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def skip(self, x: torch.Tensor) -> torch.Tensor | None:
        return None if self.mask_skip is None else self.mask_skip(x)

    def decode(self, z: torch.Tensor, identity: str, skip: torch.Tensor | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
        """(RGB, mask) of latent maps z as `identity`; the mask needs the input's `skip` (else None)."""
        return self.decoders[self.check_identity(identity)](z, skip)

    def forward_masked(self, x: torch.Tensor, identity: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.decode(self.encode(x), identity, self.skip(x))

    def forward_all(self, xs: list[torch.Tensor], together: bool | None = None,
                    ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:  # fmt: skip
        """`together` (default: on a GPU): every identity's batch through the shared encoder in one
        pass (one set of kernel launches at the summed batch), then each through its own decoder.
        Otherwise each identity passes on its own: one pass at the summed batch was 8-20 % slower
        for the demo model on a 2-core Xeon (oneDNN), where launches cost nothing and smaller
        batches stay in cache."""
        if not (xs[0].is_cuda if together is None else together):
            return super().forward_all(xs)
        x = torch.cat(xs) if len(xs) > 1 else xs[0]
        sizes = [len(x) for x in xs]
        z, skip = self.encode(x), self.skip(x)
        skips = [None] * len(xs) if skip is None else skip.split(sizes)
        return [self.decode(zi, name, si) for zi, si, name in zip(z.split(sizes), skips, self.cfg.identities,
                                                                  strict=True)]
