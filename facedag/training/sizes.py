"""The table of model size presets (`train.preset`) and how a train section resolves against it
(facedag.training.presets has the memory estimate and `batch_size: auto`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Preset:
    encoder_width: int
    decoder_width: int
    bottleneck: int
    face_size: int  # the base.face_size it is meant for (another one works, with other memory)
    batch: int  # default faces per identity per step
    gpu_gib: float  # estimated GPU memory at `batch` and `face_size`, two identities (see the module docstring)


# name -> preset; `demo` is what runs on 2 CPU cores in minutes, `128` the real-size model of the
# README (59.9 M parameters, 37.1 GFLOP per face per step), `256` the same widths at 256 px.
PRESETS: dict[str, Preset] = {
    "demo": Preset(16, 16, 128, 64, 8, 1.1),
    "small": Preset(32, 32, 256, 128, 16, 1.9),
    "128": Preset(64, 64, 512, 128, 32, 3.7),
    "256": Preset(64, 64, 512, 256, 16, 7.7),
}


@dataclass(frozen=True)
class Size:
    """A train section's model size: its own values where set, the preset's otherwise."""

    encoder_width: int
    decoder_width: int
    bottleneck: int
    batch_size: int | str  # a number, or "auto"


def resolve(train: Any) -> Size:
    """`train` (facedag.params.Train) with unset widths, bottleneck and batch from its preset's row."""
    row = PRESETS[train.preset]

    def pick(key: str, fallback: int) -> Any:
        value = getattr(train, key)
        return fallback if value is None else value

    return Size(pick("encoder_width", row.encoder_width), pick("decoder_width", row.decoder_width),
                pick("bottleneck", row.bottleneck), pick("batch_size", row.batch))
