"""Blend masks, one file per kind (`convert.mask`), as faceswap's mask plugins.

A mask says which pixels of the aligned face are pasted over the target. Each module exposes

    build(size: int, landmarks: np.ndarray, erode: float, feather: float) -> np.ndarray

`landmarks` are the face's points in aligned px, the mesh's 478 (facedag.faces.mesh) or five
(facedag.faces.detect's, where the landmarker fell back to them), `erode`
and `feather` fractions of `size`; the result is float32 (size, size) in [0, 1] and exactly 0
outside the region (convert's tests check that such pixels are never touched). `_shape.py`
holds the erosion and inward feather every kind shares. Kinds: `components` (the mesh's face
oval), `extended` (the oval raised up the forehead), `hull` (the inner face derived from five
landmarks). The mesh kinds fall back to `hull` for a five-point face.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from facedag.registry import Registry

MaskBuilder = Callable[[int, np.ndarray, float, float], np.ndarray]
MASKS: Registry[MaskBuilder] = Registry(__name__, "mask kind", "build")
