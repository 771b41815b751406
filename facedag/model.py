"""The face-swap autoencoder: one shared encoder, one decoder per identity.

Training teaches every decoder to rebuild its own identity's faces from the shared latent code;
because the code is shared, it comes to describe pose, expression and lighting, and the
decoder supplies the identity. Swapping is then: encode a `dst` face, decode with `src`'s
decoder (DeepFaceLab's "DF" layout: encoder and "inter" shared, decoders per identity).

Layout for a face of side S (S a multiple of 16, 64..256 in use, 32 in tests), widths w (encoder)
and d (decoder), bottleneck b:

  encoder: 4 x [conv 5x5 stride 2 + LeakyReLU]  3 -> w -> 2w -> 4w -> 8w     (S/16 px)
           flatten -> Linear(8w * (S/16)^2, b) -> Linear(b, 8d * (S/16)^2)   (the bottleneck)
           upscale (conv 3x3 -> pixel shuffle x2)  8d -> 8d                   (S/8 px)  = z
  decoder: 3 x upscale  8d -> 4d -> 2d -> d, a residual block, conv 5x5 -> 3, sigmoid  (S px)

Weights go to disk as safetensors with a JSON record beside them (no pickles): `save_model`,
`load_model`, and `Swapper` (what convert uses).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from facedag.records import atomic_path, atomic_write_json

DOWNSAMPLES = 4  # the encoder halves the face 4 times, so face_size must be a multiple of 16
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes the model's shapes; a checkpoint resumes only into an equal config."""

    face_size: int
    encoder_width: int
    decoder_width: int
    bottleneck: int
    identities: tuple[str, ...]  # decoder order

    def __post_init__(self) -> None:
        if self.face_size < 32 or self.face_size % (1 << DOWNSAMPLES):
            raise ValueError(f"face_size must be a multiple of {1 << DOWNSAMPLES} and >= 32, got {self.face_size}")
        if min(self.encoder_width, self.decoder_width, self.bottleneck) < 1:
            raise ValueError("encoder_width, decoder_width and bottleneck must be positive")
        if not self.identities or len(set(self.identities)) != len(self.identities):
            raise ValueError(f"identities must be distinct and non-empty, got {self.identities!r}")
        object.__setattr__(self, "identities", tuple(str(i) for i in self.identities))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["identities"] = list(self.identities)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        return cls(
            face_size=int(d["face_size"]),
            encoder_width=int(d["encoder_width"]),
            decoder_width=int(d["decoder_width"]),
            bottleneck=int(d["bottleneck"]),
            identities=tuple(d["identities"]),
        )


def _act() -> nn.Module:
    return nn.LeakyReLU(0.1, inplace=True)


class Upscale(nn.Sequential):
    """conv 3x3 to 4x the channels, then pixel shuffle: 2x the side without checkerboard-prone transposed convs."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, cout * 4, 3, padding=1), _act(), nn.PixelShuffle(2))


class Residual(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), _act(), nn.Conv2d(ch, ch, 3, padding=1))
        self.act = _act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class Encoder(nn.Module):
    """Shared: convs down to S/16, the dense bottleneck, and one upscale to S/8 (the latent map z)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        w, d = cfg.encoder_width, cfg.decoder_width
        chans = [3, w, 2 * w, 4 * w, 8 * w]
        layers: list[nn.Module] = []
        for i in range(DOWNSAMPLES):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 5, stride=2, padding=2), _act()]
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
    """Per identity: three upscales from S/8 to S, a residual block, and RGB in [0, 1]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.decoder_width
        self.body = nn.Sequential(Upscale(8 * d, 4 * d), Upscale(4 * d, 2 * d), Upscale(2 * d, d), Residual(d))
        self.rgb = nn.Conv2d(d, 3, 5, padding=2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.rgb(self.body(z)))


class FaceSwapModel(nn.Module):
    """x, y: float32 (N, 3, S, S) RGB in [0, 1]; `identity` picks the decoder."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoders = nn.ModuleDict({name: Decoder(cfg) for name in cfg.identities})

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor, identity: str) -> torch.Tensor:
        if identity not in self.decoders:
            raise KeyError(f"no decoder for identity {identity!r} (have: {', '.join(self.cfg.identities)})")
        return self.decoders[identity](z)

    def forward(self, x: torch.Tensor, identity: str) -> torch.Tensor:
        return self.decode(self.encode(x), identity)


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage: give it plain contiguous copies
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


# params' `model: best | last` -> the weights' file stem in models/: best held-out score, or the last step
WEIGHTS = {"best": "best", "last": "model"}


def save_model(model: FaceSwapModel, cfg: ModelConfig, models_dir: str | os.PathLike[str],
               info: dict[str, Any], name: str = "model") -> None:
    """Write `models_dir`/<name>.safetensors and <name>.json atomically (weights first, record second).

    `name` is `model` (the last weights) or `best` (the best held-out score, facedag.training).

    `info` is carried into the record as is; its `step` and `dataset_hash` (when present) are
    also lifted to the top level, where convert and render read them.
    """
    out = Path(models_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / f"{name}.safetensors") as tmp:
        save_file(_cpu_state(model), str(tmp), metadata={"config": json.dumps(cfg.to_dict(), sort_keys=True)})
    atomic_write_json(out / f"{name}.json", {
        "format": FORMAT_VERSION,
        "config": cfg.to_dict(),
        "identities": list(cfg.identities),
        "step": info.get("step"),
        "dataset_hash": info.get("dataset_hash"),
        "info": info,
    })  # fmt: skip


def load_model(models_dir: str | os.PathLike[str] = "models", device: str | torch.device = "cpu",
               name: str = "model") -> tuple[FaceSwapModel, ModelConfig]:
    """(model in eval mode on `device`, its config) from <name>.json + <name>.safetensors; never unpickles."""
    d = Path(models_dir)
    try:
        record = json.loads((d / f"{name}.json").read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{d / f'{name}.json'} not found: run the train stage first") from None
    cfg = ModelConfig.from_dict(record["config"])
    model = FaceSwapModel(cfg)
    model.load_state_dict(load_file(str(d / f"{name}.safetensors"), device="cpu"), strict=True)
    return model.to(device).eval(), cfg


class Swapper:
    """Encode faces with the shared encoder, decode with `to_identity`'s decoder, in batches.

    faces: uint8 (N, S, S, 3) RGB aligned at the model's face size -> uint8 (N, S, S, 3).
    """

    def __init__(self, models_dir: str | os.PathLike[str], to_identity: str, device: str | torch.device = "cpu",
                 batch: int = 16, name: str = "model") -> None:
        self.model, self.cfg = load_model(models_dir, device, name)
        if to_identity not in self.cfg.identities:
            raise KeyError(f"the model has no decoder for {to_identity!r} (have: {', '.join(self.cfg.identities)})")
        self.to_identity = to_identity
        self.device = torch.device(device)
        self.batch = max(1, int(batch))

    @property
    def face_size(self) -> int:
        return self.cfg.face_size

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        faces = np.asarray(faces)
        s = self.cfg.face_size
        if faces.ndim != 4 or faces.shape[1:] != (s, s, 3) or faces.dtype != np.uint8:
            raise ValueError(f"expected uint8 (N, {s}, {s}, 3) faces, got {faces.dtype} {faces.shape}")
        out = np.empty_like(faces)
        with torch.no_grad():
            for i in range(0, len(faces), self.batch):
                x = torch.from_numpy(faces[i : i + self.batch]).to(self.device).permute(0, 3, 1, 2).float() / 255.0
                y = self.model(x, self.to_identity)
                out[i : i + self.batch] = (y * 255.0).round().clamp(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy()
        return out
