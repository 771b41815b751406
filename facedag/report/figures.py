"""Report figures of trim and dedupe (matplotlib, Agg backend, written atomically).

- `trim_coverage_figure`: where the sampled faces of all shots and of the kept shots fall in
  yaw x pitch, the cells (pose x expression x lighting) covered before and after per
  axis, and the greedy curve: cells covered against seconds kept, in pick order.
- `dedupe_figure`: the pose scatter of the faces before (all aligned faces) and after
  (the dataset), the luminance histogram before and after, the bin occupancy, and a contact
  sheet of kept faces.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from facedag.curation.coverage import Grid
from facedag.records import atomic_path

DPI = 100


def save(fig: Figure, path: str | os.PathLike[str]) -> None:
    """Write a figure as PNG atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    plt.close(fig)


def _pose_hist(ax: plt.Axes, yaw: np.ndarray, pitch: np.ndarray, grid: Grid, title: str) -> None:
    ya, pa = grid.axes[0], grid.axes[1]
    yi, pi = ya.index(yaw), pa.index(pitch)
    h = np.zeros((pa.bins, ya.bins))
    np.add.at(h, (pi, yi), 1)
    im = ax.imshow(np.where(h > 0, h, np.nan), origin="lower", cmap="viridis", aspect="auto",
                   extent=(ya.lo, ya.hi, pa.lo, pa.hi), interpolation="nearest")
    plt.colorbar(im, ax=ax, label="faces in cell")
    ax.scatter(np.clip(yaw, ya.lo, ya.hi), np.clip(pitch, pa.lo, pa.hi), s=6, c="k", alpha=0.5, linewidths=0)
    ax.set_xlabel("yaw (deg)")
    ax.set_ylabel("pitch (deg)")
    ax.set_title(title, fontsize=9)


def trim_coverage_figure(
    path: str | os.PathLike[str],
    grid: Grid,
    before: dict[str, np.ndarray],
    after: dict[str, np.ndarray],
    curve_seconds: Sequence[float],
    curve_cells: Sequence[int],
    seconds_in: float,
) -> None:
    """Coverage before (all shots' sampled faces) and after (kept shots) trimming.

    `before`/`after`: feature columns of the sampled faces (at least the grid's columns);
    `curve_*`: cumulative seconds and cells covered after each pick.
    """
    fig = plt.figure(figsize=(12, 7.5))
    gs = fig.add_gridspec(2, 3)
    cb, ca = grid.cells(before), grid.cells(after)
    nb, na = int(np.unique(cb).size), int(np.unique(ca).size)
    _pose_hist(fig.add_subplot(gs[0, 0]), np.asarray(before["yaw"]), np.asarray(before["pitch"]), grid,
               f"all shots: {len(cb)} faces, {seconds_in:.1f} s, {nb} cells")
    kept_s = float(curve_seconds[-1]) if len(curve_seconds) else 0.0
    _pose_hist(fig.add_subplot(gs[0, 1]), np.asarray(after["yaw"]), np.asarray(after["pitch"]), grid,
               f"kept shots: {len(ca)} faces, {kept_s:.1f} s, {na} cells")

    ax = fig.add_subplot(gs[0, 2])
    x = np.r_[0.0, np.asarray(curve_seconds, dtype=float)]
    y = np.r_[0, np.asarray(curve_cells, dtype=float)]
    ax.plot(x, y, "o-", ms=3, label="kept, in pick order")
    ax.axhline(nb, color="k", ls="--", lw=1, label=f"all shots ({nb})")
    ax.set_xlabel("seconds kept")
    ax.set_ylabel("cells covered")
    ax.set_title(f"greedy selection: {len(curve_seconds)} shots", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")

    ax = fig.add_subplot(gs[1, :])
    labels, vb, va = [], [], []
    for k, a in enumerate(grid.axes):
        ib, ia = grid.unravel(cb)[k] if cb.size else np.zeros(0), grid.unravel(ca)[k] if ca.size else np.zeros(0)
        for b in range(a.bins):
            e = a.edges()
            labels.append(f"{a.column}\n[{e[b]:.3g},{e[b + 1]:.3g})")
            vb.append(int((ib == b).sum()))
            va.append(int((ia == b).sum()))
    pos = np.arange(len(labels))
    ax.bar(pos - 0.2, vb, width=0.4, label="all shots")
    ax.bar(pos + 0.2, va, width=0.4, label="kept")
    ax.set_xticks(pos, labels, fontsize=6, rotation=90)
    ax.set_ylabel("sampled faces")
    ax.set_title("faces per bin of each axis", fontsize=9)
    ax.legend(fontsize=8)
    fig.suptitle(f"trim: coverage of {grid.size} pose x expression x lighting cells")
    fig.tight_layout()
    save(fig, path)


def contact_sheet(images: Sequence[np.ndarray], cols: int = 10, side: int = 64) -> np.ndarray:
    """A grid of RGB thumbnails (white gaps), side x side each."""
    import cv2

    n = max(1, len(images))
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    gap = 2
    sheet = np.full((rows * (side + gap) + gap, cols * (side + gap) + gap, 3), 255, np.uint8)
    for k, im in enumerate(images):
        if im.ndim == 2:
            im = np.repeat(im[:, :, None], 3, axis=2)
        t = cv2.resize(im, (side, side), interpolation=cv2.INTER_AREA)
        r, c = divmod(k, cols)
        y, x = gap + r * (side + gap), gap + c * (side + gap)
        sheet[y : y + side, x : x + side] = t[:, :, :3]
    return sheet


def dedupe_figure(
    path: str | os.PathLike[str],
    grid: Grid,
    before: dict[str, np.ndarray],
    after: dict[str, np.ndarray],
    kept_images: Sequence[np.ndarray],
    counts: dict[str, int],
    sheet_max: int = 60,
) -> None:
    """Pose scatter before/after, luminance histogram, bin occupancy and a contact sheet."""
    fig = plt.figure(figsize=(13, 9))
    gs = fig.add_gridspec(2, 3, height_ratios=[1, 1.15])
    ya, pa = grid.axes[0], grid.axes[1]

    ax = fig.add_subplot(gs[0, 0])
    lim = (ya.lo - 10, ya.hi + 10), (pa.lo - 10, pa.hi + 10)  # faces beyond are drawn at the edge

    def pose(d: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return np.clip(np.asarray(d["yaw"], float), *lim[0]), np.clip(np.asarray(d["pitch"], float), *lim[1])

    ax.scatter(*pose(before), s=8, c="0.6", alpha=0.6, linewidths=0, label=f"aligned ({len(before['yaw'])})")
    ax.scatter(*pose(after), s=10, c="C3", alpha=0.8, linewidths=0, label=f"kept ({len(after['yaw'])})")
    for e in ya.edges()[1:-1]:
        ax.axvline(e, color="k", lw=0.4, alpha=0.4)
    for e in pa.edges()[1:-1]:
        ax.axhline(e, color="k", lw=0.4, alpha=0.4)
    ax.set_xlim(*lim[0])
    ax.set_ylim(*lim[1])
    ax.set_xlabel("yaw (deg)")
    ax.set_ylabel("pitch (deg)")
    ax.set_title("pose before and after (lines: balancing bins)", fontsize=9)
    ax.legend(fontsize=8)

    ax = fig.add_subplot(gs[0, 1])
    bins = np.linspace(0, 1, 26)
    ax.hist(np.clip(before["luminance"], 0, 1), bins=bins, alpha=0.5, label="aligned", color="0.5")
    ax.hist(np.clip(after["luminance"], 0, 1), bins=bins, alpha=0.8, label="kept", color="C3")
    light = next((a for a in grid.axes if a.column == "luminance"), None)
    if light is not None:
        for e in light.edges()[1:-1]:
            ax.axvline(e, color="k", lw=0.6, ls="--")
    ax.set_xlabel("face luminance (0..1)")
    ax.set_ylabel("faces")
    ax.set_title("lighting", fontsize=9)
    ax.legend(fontsize=8)

    ax = fig.add_subplot(gs[0, 2])
    cb, ca = grid.cells(before), grid.cells(after)
    occ_b = np.bincount(cb, minlength=grid.size) if cb.size else np.zeros(grid.size)
    occ_a = np.bincount(ca, minlength=grid.size) if ca.size else np.zeros(grid.size)
    used = np.flatnonzero(occ_b > 0)
    order = used[np.argsort(-occ_b[used], kind="stable")]
    ax.bar(np.arange(order.size), occ_b[order], color="0.6", label="aligned")
    ax.bar(np.arange(order.size), occ_a[order], color="C3", label="kept")
    if occ_b.max(initial=0) > 50:
        ax.set_yscale("log")
    ax.set_xlabel("bin (by faces before)")
    ax.set_ylabel("faces")
    ax.set_title(f"bins: {int((occ_a > 0).sum())} of {grid.size} covered", fontsize=9)
    ax.legend(fontsize=8)

    ax = fig.add_subplot(gs[1, :])
    shown = list(kept_images[:sheet_max])
    if shown:
        ax.imshow(contact_sheet(shown, cols=15))
    ax.set_axis_off()
    ax.set_title(f"kept faces (first {len(shown)} of {len(after['yaw'])}, in selection order)", fontsize=9)
    text = ", ".join(f"{k} {v}" for k, v in counts.items())
    fig.suptitle(f"dedupe: {text}")
    fig.tight_layout()
    save(fig, path)
