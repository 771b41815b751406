"""facedag.swap.masks: the mesh kinds on a real face's mesh, against the five-point hull."""

from __future__ import annotations

import numpy as np
import pytest

from facedag.faces.align import loose_crop, transform_points
from facedag.faces.detect import FaceDetector
from facedag.faces.landmarkers import LANDMARKERS
from facedag.faces.mesh import five_points, regions
from facedag.swap.masks import MASKS

SIZE = 128


@pytest.fixture(scope="module")
def mesh() -> np.ndarray:
    """A real face's mesh in aligned px (the astronaut)."""
    from skimage.data import astronaut

    image = np.ascontiguousarray(astronaut())
    det = FaceDetector().detect(image)[0]
    crop, cm = loose_crop(image, det.landmarks, SIZE)
    with LANDMARKERS.get("mediapipe")() as landmarker:
        found = landmarker(crop, cm, det.landmarks)
    assert found.dense
    return transform_points(found.points, found.matrix(SIZE))


def test_mesh_covers_the_oval_and_nothing_outside(mesh: np.ndarray) -> None:
    m = MASKS.get("mesh")(SIZE, mesh, 0.0, 0.0)
    r = regions()
    inside = np.round(mesh[np.concatenate([r["lips"], r["nose"], r["eye_l"], r["eye_r"]])]).astype(int)
    assert (m[inside[:, 1], inside[:, 0]] == 1).all()
    oval = mesh[r["oval"]]
    (x0, y0), (x1, y1) = oval.min(0), oval.max(0)
    ys, xs = np.nonzero(m)
    assert xs.min() >= x0 - 1 and xs.max() <= x1 + 1 and ys.min() >= y0 - 1 and ys.max() <= y1 + 1


def test_mesh_masks_reach_the_chin_where_the_hull_guesses(mesh: np.ndarray) -> None:
    hull = MASKS.get("hull")(SIZE, mesh, 0.02, 0.06)
    oval = MASKS.get("mesh")(SIZE, mesh, 0.02, 0.06)
    extended = MASKS.get("extended")(SIZE, mesh, 0.02, 0.06)
    assert oval.sum() > hull.sum()
    assert extended.sum() > oval.sum()
    # the extended mask adds forehead only: above the brows
    added = (extended > 0) & (oval == 0)
    r = regions()
    brow_y = mesh[np.concatenate([r["brow_l"], r["brow_r"]]), 1].min()
    assert added.any() and np.nonzero(added)[0].max() < brow_y


@pytest.mark.parametrize("kind", ["mesh", "extended"])
def test_mesh_kinds_fall_back_to_the_hull_for_five_points(mesh: np.ndarray, kind: str) -> None:
    five = five_points(mesh)
    assert np.array_equal(MASKS.get(kind)(SIZE, five, 0.02, 0.06), MASKS.get("hull")(SIZE, five, 0.02, 0.06))


def test_learned_keeps_to_the_mesh_region_and_leaves_out_what_the_model_calls_not_face(mesh: np.ndarray) -> None:
    oval = MASKS.get("mesh")(SIZE, mesh, 0.0, 0.0)
    everywhere = np.ones((SIZE, SIZE), np.float32)
    # a model that calls everything face: the mesh region exactly, nothing beyond it
    assert np.array_equal(MASKS.get("learned")(SIZE, mesh, 0.0, 0.0, predicted=everywhere), oval)
    # a hand over the lower face: left out, and the feather moves inward from its edge too
    hand = everywhere.copy()
    hand[90:, :] = 0.2
    m = MASKS.get("learned")(SIZE, mesh, 0.02, 0.06, predicted=hand)
    soft = MASKS.get("mesh")(SIZE, mesh, 0.02, 0.06)
    assert soft[90:].any()
    # the hand widened by the margin (2.5 % of 128 = 3 px), then eroded (3 px) and feathered
    assert not m[90 - 3 - 3 :].any()
    assert np.array_equal(m[:60], soft[:60])  # away from the hand: the mesh mask
    assert m[75:84].max() < soft[75:84].max()  # feathered back from the hand's edge
    with pytest.raises(ValueError, match="needs the model's mask"):
        MASKS.get("learned")(SIZE, mesh, 0.02, 0.06)
    with pytest.raises(ValueError, match="expected"):
        MASKS.get("learned")(SIZE, mesh, 0.02, 0.06, predicted=everywhere[:10])
