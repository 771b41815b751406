"""Coverage cells: which pose, expression and lighting conditions a set of faces covers.

Shared by trim (which shots add the most new conditions), dedupe (balance the dataset
across pose x lighting bins) and facedag.curation.target_profile (the target's faces on the same
cells, so that both can weight their choice toward the conditions the target shows). A
face's features are cut into bins on fixed, absolute axes (degrees, ratios, grey levels), not
on quantiles of the data: a cell then means the same thing for every clip and identity, and
"covered" is comparable between runs.

An `Axis` has `bins` equal-width bins over [lo, hi]; values outside fall into the end bins,
NaN (a feature the face library could not measure) into the middle bin. A `Grid` is the
product of its axes; `Grid.cells(df)` gives one flat cell id per row, `np.ravel_multi_index`
order, so that the cell of a row is also readable per axis with `Grid.unravel`.

Features (columns of the face table, see facedag.faces.features):
  yaw, pitch      degrees, 0 = frontal; a 7 x 5 grid of about 17 x 16 degrees over +-60 / +-40
  mouth_open      0 closed .. 1 wide open (a proxy: dark pixels between the mouth corners)
  eyes_open       0 closed .. ~1 open (a proxy: luma contrast at the eyes), up to 1.5
  luminance       mean luma of the aligned face, 0..1
  asymmetry       (image-left half - image-right half) / mean luma: > 0 = lit from the image left
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Axis:
    """`bins` equal-width bins of `column` over [lo, hi], open at both ends."""

    column: str
    lo: float
    hi: float
    bins: int

    def __post_init__(self) -> None:
        if self.bins < 1:
            raise ValueError(f"axis {self.column}: bins must be >= 1")
        if not self.hi > self.lo:
            raise ValueError(f"axis {self.column}: hi must be above lo")

    def index(self, values: np.ndarray | Sequence[float]) -> np.ndarray:
        """Bin index (0 .. bins-1) of each value; NaN goes to the middle bin."""
        v = np.asarray(values, dtype=np.float64)
        width = (self.hi - self.lo) / self.bins
        with np.errstate(invalid="ignore"):
            idx = np.floor((v - self.lo) / width)
        idx = np.where(np.isnan(idx), self.bins // 2, idx)
        return np.clip(idx, 0, self.bins - 1).astype(np.int64)

    def centers(self) -> np.ndarray:
        width = (self.hi - self.lo) / self.bins
        return self.lo + width * (np.arange(self.bins) + 0.5)

    def edges(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, self.bins + 1)


# The fixed axes. Ranges are where faces usable for training live: beyond +-60 degrees of
# yaw one eye is hidden and 5-point alignment degrades, so those faces share the end bins.
YAW = Axis("yaw", -60.0, 60.0, 7)
PITCH = Axis("pitch", -40.0, 40.0, 5)
MOUTH = Axis("mouth_open", 0.0, 0.4, 2)  # open when >= 0.2
EYES = Axis("eyes_open", 0.0, 1.0, 2)  # closed/squinting when < 0.5
LUMINANCE = Axis("luminance", 0.2, 0.8, 3)  # dark < 0.4 <= mid < 0.6 <= bright
ASYMMETRY = Axis("asymmetry", -0.3, 0.3, 3)  # lit from the image right / frontal / from the image left


@dataclass(frozen=True)
class Grid:
    """The product of some axes: cell ids 0 .. size-1."""

    axes: tuple[Axis, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(a.bins for a in self.axes)

    @property
    def size(self) -> int:
        return int(math.prod(self.shape))

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(a.column for a in self.axes)

    def cells(self, table: pd.DataFrame | Mapping[str, Sequence[float]]) -> np.ndarray:
        """Flat cell id of each row of `table` (a DataFrame or dict of columns).

        A missing column counts as NaN (the middle bin), so a grid still works on a table
        from an older face library that lacks one feature.
        """
        n = len(table) if isinstance(table, pd.DataFrame) else len(next(iter(table.values()), []))
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        idx = []
        for a in self.axes:
            values = table[a.column] if a.column in table else np.full(n, np.nan)
            idx.append(a.index(np.asarray(values, dtype=np.float64)))
        return np.ravel_multi_index(tuple(idx), self.shape).astype(np.int64)

    def unravel(self, cells: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per-axis bin index of each flat cell id."""
        return np.unravel_index(np.asarray(cells, dtype=np.int64), self.shape)

    def label(self, cell: int) -> str:
        """A readable name of one cell, e.g. 'yaw[-8.57143,8.57143) pitch[-8,8) luminance[0.4,0.6)'."""
        parts = []
        for a, i in zip(self.axes, self.unravel(np.array([cell])), strict=True):
            e = a.edges()
            parts.append(f"{a.column}[{e[int(i[0])]:g},{e[int(i[0]) + 1]:g})")
        return " ".join(parts)


def with_bins(axis: Axis, bins: int) -> Axis:
    """The same axis range cut into a different number of bins."""
    return Axis(axis.column, axis.lo, axis.hi, int(bins))


def trim_grid() -> Grid:
    """Trim's cells: pose x expression x lighting (7 x 5 x 2 x 2 x 3 x 3 = 1260 cells)."""
    return Grid((YAW, PITCH, MOUTH, EYES, LUMINANCE, ASYMMETRY))


def pose_light_grid(yaw_bins: int = 7, pitch_bins: int = 5, light_bins: int = 3, light_dir_bins: int = 3) -> Grid:
    """Dedupe's balancing bins: yaw x pitch x luminance x lighting direction (7 x 5 x 3 x 3 = 315)."""
    return Grid((with_bins(YAW, yaw_bins), with_bins(PITCH, pitch_bins), with_bins(LUMINANCE, light_bins),
                 with_bins(ASYMMETRY, light_dir_bins)))


def counts(cells: np.ndarray, size: int) -> np.ndarray:
    """How many faces fall in each of `size` cells."""
    return np.bincount(np.asarray(cells, dtype=np.int64), minlength=size)


def entropy_bits(cells: np.ndarray) -> float:
    """Shannon entropy (bits) of the distribution of faces over the cells they occupy.

    log2(k) when k cells are equally filled: higher = the same number of faces spread over
    more conditions, more evenly.
    """
    c = np.bincount(np.asarray(cells, dtype=np.int64))
    c = c[c > 0].astype(np.float64)
    if c.size == 0:
        return 0.0
    p = c / c.sum()
    return float(-(p * np.log2(p)).sum())


def summary(cells: np.ndarray, grid: Grid) -> dict[str, float | int]:
    """cells_covered, cells_total, entropy_bits and evenness (entropy / log2 cells_covered)."""
    cells = np.asarray(cells, dtype=np.int64)
    covered = int(np.unique(cells).size)
    h = entropy_bits(cells)
    return {
        "cells_covered": covered,
        "cells_total": grid.size,
        "entropy_bits": round(h, 4),
        "evenness": round(h / math.log2(covered), 4) if covered > 1 else float(covered == 1),
    }
