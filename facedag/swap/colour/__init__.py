"""Colour matching, one file per mode (`convert.colour`), after DeepFaceLab's colour transfer modes.

The generated face is lit like the training data; convert moves its colour statistics toward
those of the target's face it replaces. Each module exposes

    transfer(face: np.ndarray, target: np.ndarray, region: np.ndarray) -> np.ndarray

`face` and `target` are aligned RGB uint8 images of one size, `region` the bool mask where
statistics are read (facedag.swap.blend.colour_region: where the face is pasted opaque). The
transform applies to the whole face; the blend mask decides later what is pasted. Modes:
`rct` (Reinhard et al. 2001, per-channel L*a*b* mean and spread), `avg` (the L*a*b* mean only),
`hist` (per-channel histogram matching), `none`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from facedag.registry import Registry

ColourTransfer = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
COLOUR: Registry[ColourTransfer] = Registry(__name__, "colour mode", "transfer")
