"""Model layouts, one file per layout (`train.layout`), as faceswap's model plugins and
DeepFaceLab's SAEHD archi options.

Each module exposes `Model`, a facedag.training.model.FaceSwapModel subclass built from a
ModelConfig: `Model(cfg)(x, identity)` maps float32 (N, 3, S, S) RGB in [0, 1] to the face
`identity`'s decoder makes of it, and `forward_masked` that with the learned mask. `_blocks.py`
holds the layers layouts share. Layouts: `df` (one shared encoder, one decoder per identity),
`liae` (a shared encoder, a shared and a per-identity intermediate, one shared decoder).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from facedag.registry import Registry

if TYPE_CHECKING:
    from facedag.training.model import FaceSwapModel

LAYOUTS: Registry[type[FaceSwapModel]] = Registry(__name__, "model layout", "Model")
