"""`learned`: the model's own mask (facedag.training.model: the decoder's mask head), kept within
the `mesh` region, then eroded and feathered like the other kinds.

The landmark kinds paste over everything inside the face's outline, so a hand, a microphone or
a glasses frame in front of the target's face is painted over with skin. The model's mask was
trained to say "face" where the face shows and "not face" over synthetic occluders
(facedag.training.occluders), so pasting only where it says "face" leaves a real occluder in
front. Bounded by the mesh oval (a five-point face: the hull) so that a mask that spills onto
hair or background never widens the paste beyond what `mesh` would touch; thresholded at 0.5;
what the model calls "not face" inside the oval is widened by MARGIN of the face side before
the erosion and feather (which then give the edge its softness, as for the other kinds).

Why the margin: the model's mask is a few aligned pixels soft at an occluder's edge, and the
two errors cost differently: skin pasted over a hand's edge is a visible artefact, a sliver of
the target's own face left beside the hand is not. On the planted occluder
(benchmarks/bench_occluder.py) the misses were a band along the bar's edge.
"""

from __future__ import annotations

import cv2
import numpy as np

from facedag.swap.masks import mesh
from facedag.swap.masks._shape import erode_and_feather

THRESHOLD = 0.5  # the model's mask above this is face
MARGIN = 0.025  # "not face" inside the oval widened by this fraction of the face side


def build(size: int, landmarks: np.ndarray, erode: float = 0.02, feather: float = 0.06,
          predicted: np.ndarray | None = None) -> np.ndarray:
    """The learned mask of one aligned face: float32 (size, size) in [0, 1], 0 outside the mesh
    region and wherever the model's mask `predicted` (float32 (size, size)) is below THRESHOLD."""
    if predicted is None:
        raise ValueError("the learned mask needs the model's mask (convert passes it from Swapper.swap)")
    predicted = np.asarray(predicted, np.float32)
    if predicted.shape != (size, size):
        raise ValueError(f"the model's mask is {predicted.shape}, expected ({size}, {size})")
    canvas = mesh.region(size, landmarks)
    hidden = ((predicted < THRESHOLD) & (canvas > 0)).astype(np.uint8)
    px = round(MARGIN * size)
    if px > 0 and hidden.any():
        hidden = cv2.dilate(hidden, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1)))
    canvas[hidden > 0] = 0
    return erode_and_feather(canvas, erode, feather)
