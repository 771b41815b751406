"""Coverage cells: binning on fixed axes, flat cell ids, entropy."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from facedag.curation.coverage import Axis, Grid, entropy_bits, pose_light_grid, summary, trim_grid


def test_axis_bins_are_equal_width_and_open_at_both_ends():
    a = Axis("yaw", -60, 60, 4)  # edges -60, -30, 0, 30, 60
    assert a.index([-100, -60, -30.1, -30, -0.1, 0, 29.9, 30, 60, 500]).tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 3]
    assert a.index([np.nan]).tolist() == [2]  # unmeasured: the middle bin
    assert np.allclose(a.centers(), [-45, -15, 15, 45])
    with pytest.raises(ValueError):
        Axis("x", 1, 1, 2)


def test_grid_cells_round_trip_and_missing_columns():
    grid = Grid((Axis("yaw", -60, 60, 3), Axis("pitch", -40, 40, 2)))
    table = pd.DataFrame({"yaw": [-50, 0, 50, 50], "pitch": [-30, 30, -30, 30]})
    cells = grid.cells(table)
    assert grid.size == 6 and cells.tolist() == [0, 3, 4, 5]
    yi, pi = grid.unravel(cells)
    assert yi.tolist() == [0, 1, 2, 2] and pi.tolist() == [0, 1, 0, 1]
    # no pitch column: every face in pitch's middle bin (index 1 of 2)
    assert grid.unravel(grid.cells(pd.DataFrame({"yaw": [0.0]})))[1].tolist() == [1]
    assert grid.cells(pd.DataFrame({"yaw": [], "pitch": []})).size == 0
    assert grid.label(0) == "yaw[-60,-20) pitch[-40,0)"


def test_entropy_and_summary():
    assert entropy_bits(np.array([3, 3, 3])) == 0.0
    assert entropy_bits(np.array([0, 1, 2, 3])) == pytest.approx(2.0)
    assert entropy_bits(np.array([0, 0, 0, 1])) < 1.0
    grid = pose_light_grid(7, 5, 3, 3)
    s = summary(np.array([0, 1, 1, 5]), grid)
    assert s["cells_covered"] == 3 and s["cells_total"] == 7 * 5 * 3 * 3
    assert 0 < s["evenness"] <= 1


def test_default_grids_cover_the_features_the_face_library_measures():
    grid = trim_grid()
    assert grid.columns == ("yaw", "pitch", "mouth_open", "eyes_open", "luminance", "asymmetry")
    assert grid.size == math.prod(grid.shape) == 1260
    frontal_mid = {"yaw": [0.0], "pitch": [0.0], "mouth_open": [0.0], "eyes_open": [1.0], "luminance": [0.5],
                   "asymmetry": [0.0]}
    idx = [int(i[0]) for i in grid.unravel(grid.cells(pd.DataFrame(frontal_mid)))]
    assert idx == [3, 2, 0, 1, 1, 1]
