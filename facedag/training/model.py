"""The face-swap model: its config, the layout that builds it, and its files on disk.

A model maps an aligned face to the face an identity's decoder makes of it, and (with the mask
head, `ModelConfig.mask`) to a 1-channel mask of where that face is: the face region, minus
whatever covers it (a hand, a microphone: the training pastes synthetic occluders,
facedag.training.occluders, and the mask learns to leave them out). The layout (`train.layout`,
one file each in facedag.training.layouts) decides how: DeepFaceLab's `df` shares an encoder
and gives each identity a decoder; `liae` shares the encoder and one decoder, and gives each
identity its own intermediate. Swapping is then: encode a `dst` face, decode it as `src`.

Weights go to disk as safetensors with a JSON record beside them (no pickles): `save_model`,
`load_model`, and `Swapper` (what convert uses). The record holds the config, layout included,
so that loading builds the same network.
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
from facedag.training.layouts import LAYOUTS

DOWNSAMPLES = 4  # the encoders halve the face 4 times, so face_size must be a multiple of 16
FORMAT_VERSION = 2  # 2: the mask head (records of format 1 load as mask-less models)
DEFAULT_LAYOUT = "df"  # records written before layouts were a choice are df


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes the model's shapes; a checkpoint resumes only into an equal config."""

    face_size: int
    encoder_width: int
    decoder_width: int
    bottleneck: int
    identities: tuple[str, ...]  # decoder order
    layout: str = DEFAULT_LAYOUT
    mask: bool = True  # the decoder also outputs a mask; records without the key predate it: False

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
            layout=str(d.get("layout", DEFAULT_LAYOUT)),
            mask=bool(d.get("mask", False)),
        )


class NoMaskHead(ValueError):
    """The model predates the mask head (format 1): it has no learned mask to give."""


class FaceSwapModel(nn.Module):
    """What every layout is: `model(x, identity)`, x float32 (N, 3, S, S) RGB in [0, 1], gives
    the face `identity`'s decoder makes of x, same shape; `forward_masked` gives it with the
    mask, (N, 1, S, S) in [0, 1]. Layouts subclass it and implement `forward_masked`."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def check_identity(self, identity: str) -> str:
        if identity not in self.cfg.identities:
            raise KeyError(f"no decoder for identity {identity!r} (have: {', '.join(self.cfg.identities)})")
        return identity

    def forward_masked(self, x: torch.Tensor, identity: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(RGB (N, 3, S, S), mask (N, 1, S, S)) in [0, 1]; the mask is None for a mask-less
        model (cfg.mask False: a record written before the mask head)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, identity: str) -> torch.Tensor:
        return self.forward_masked(x, identity)[0]

    def forward_all(self, xs: list[torch.Tensor], together: bool | None = None,
                    ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:  # fmt: skip
        """Each identity's batch (in cfg.identities order) through the model as that identity,
        (rgb, mask) per identity: what one training step computes, as one call (one
        DistributedDataParallel forward). Layouts whose identities share an encoder override
        it to encode every batch in one pass when `together` (default: on a GPU); here it
        changes nothing."""
        return [self.forward_masked(x, name) for x, name in zip(xs, self.cfg.identities, strict=True)]


def build_model(cfg: ModelConfig) -> FaceSwapModel:
    """A freshly initialised model of `cfg`, built by its layout's plugin."""
    return LAYOUTS.get(cfg.layout)(cfg)


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage: give it plain contiguous copies
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_model(model: nn.Module, cfg: ModelConfig, models_dir: str | os.PathLike[str],
               info: dict[str, Any], name: str = "model") -> None:
    """Write `models_dir`/<name>.safetensors and <name>.json atomically (weights first, record second).

    `name` is `model` (the last weights) or `best` (the best held-out score, facedag.training.loop).

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
    model = build_model(cfg)
    model.load_state_dict(load_file(str(d / f"{name}.safetensors"), device="cpu"), strict=True)
    return model.to(device).eval(), cfg


class Swapper:
    """Encode faces with the shared encoder, decode with `to_identity`'s decoder, in batches.

    `swapper(faces)`: uint8 (N, S, S, 3) RGB aligned at the model's face size -> uint8 (N, S, S, 3);
    `swapper.swap(faces)`: (those faces, float32 (N, S, S) masks in [0, 1]), the model's learned
    mask (convert.mask `learned`); NoMaskHead for a model trained before the mask head.

    The mask comes from `mask_from`'s decoder (convert: the replaced identity, dst), not from
    `to_identity`'s: each decoder's mask head learned "face" and "not face" on its own
    identity's faces only, so src's decoder has never seen a dst face's code and calls most of
    it "not face" (on the sweep footage: 10 % of the face region at 0.5 or more through src's
    decoder, 82 % through dst's), while dst's decoder was trained to carve synthetic occluders
    out of exactly such faces (DeepFaceLab's "learned-dst" mask). Default: `to_identity`.
    """

    def __init__(self, models_dir: str | os.PathLike[str], to_identity: str, device: str | torch.device = "cpu",
                 batch: int = 16, name: str = "model", mask_from: str | None = None) -> None:
        self.model, self.cfg = load_model(models_dir, device, name)
        for who in (to_identity, mask_from or to_identity):
            if who not in self.cfg.identities:
                raise KeyError(f"the model has no decoder for {who!r} (have: {', '.join(self.cfg.identities)})")
        self.to_identity = to_identity
        self.mask_from = mask_from or to_identity
        self.device = torch.device(device)
        self.batch = max(1, int(batch))

    @property
    def face_size(self) -> int:
        return self.cfg.face_size

    @property
    def has_mask(self) -> bool:
        return self.cfg.mask

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        return self._run(faces, with_mask=False)[0]

    def swap(self, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 (N, S, S, 3) swapped faces, float32 (N, S, S) learned masks in [0, 1])."""
        if not self.cfg.mask:
            raise NoMaskHead("the model has no learned mask (it was trained before the mask head): "
                             "retrain it, or set convert.mask to mesh, extended or hull")
        out, masks = self._run(faces, with_mask=True)
        assert masks is not None
        return out, masks

    def _run(self, faces: np.ndarray, with_mask: bool) -> tuple[np.ndarray, np.ndarray | None]:
        faces = np.asarray(faces)
        s = self.cfg.face_size
        if faces.ndim != 4 or faces.shape[1:] != (s, s, 3) or faces.dtype != np.uint8:
            raise ValueError(f"expected uint8 (N, {s}, {s}, 3) faces, got {faces.dtype} {faces.shape}")
        out = np.empty_like(faces)
        masks = np.empty(faces.shape[:3], np.float32) if with_mask else None
        with torch.no_grad():
            for i in range(0, len(faces), self.batch):
                x = torch.from_numpy(faces[i : i + self.batch]).to(self.device).permute(0, 3, 1, 2).float() / 255.0
                y, m = self.model.forward_masked(x, self.to_identity)
                if masks is not None and self.mask_from != self.to_identity:
                    m = self.model.forward_masked(x, self.mask_from)[1]
                out[i : i + self.batch] = (y * 255.0).round().clamp(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy()
                if masks is not None and m is not None:
                    masks[i : i + self.batch] = m[:, 0].float().cpu().numpy()
        return out, masks
