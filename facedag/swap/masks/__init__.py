"""Blend masks, one file per kind (`convert.mask`), as faceswap's mask plugins.

A mask says which pixels of the aligned face are pasted over the target. Each module exposes

    build(size: int, landmarks: np.ndarray, erode: float, feather: float,
          predicted: np.ndarray | None = None) -> np.ndarray

`landmarks` are the face's points in aligned px, the mesh's 478 (facedag.faces.mesh) or five
(facedag.faces.detect's, where the landmarker fell back to them), `erode`
and `feather` fractions of `size`; the result is float32 (size, size) in [0, 1] and exactly 0
outside the region (convert's tests check that such pixels are never touched). `_shape.py`
holds the erosion and inward feather every kind shares. Kinds: `mesh` (the mesh's face oval,
faceswap's "components"), `extended` (the oval raised up the forehead), `hull` (the inner face
derived from five landmarks), `learned` (the model's own mask, kept within the `mesh` region).
The mesh kinds fall back to `hull` for a five-point face.

Why `predicted`: every other kind is a function of the landmarks, but `learned` needs the
model's output for that very face, float32 (size, size) in [0, 1] (facedag.training.model.Swapper.swap).
One optional argument keeps a single signature for the registry and lets convert call every
kind alike (it passes the model's mask when it has one); the landmark kinds ignore it, and
`learned` without it is an error (convert asks the model for its mask only when the kind is
`learned`, so a mask-less model fails there in one line, not here).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from facedag.registry import Registry

MaskBuilder = Callable[..., np.ndarray]
MASKS: Registry[MaskBuilder] = Registry(__name__, "mask kind", "build")
