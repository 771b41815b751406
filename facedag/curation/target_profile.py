"""The target's faces as the data half sees them, and where a training set falls short of them.

DeepFaceLab users learn late that the source set never covered the profile faces of the
target (DFL#862): the swap then smears exactly where the target turns. So trim and dedupe of
`convert.swap_to` read the pose and lighting of the face convert will replace, weight their
selection toward it, and say what is still missing, in numbers a person can act on:

    the target has 18 % of its frames at yaw >= 43 deg; src has 2 faces there (9 before dedupe)

Profile (facedag.curation.target_scan.profile_target)
----------------------------------------------------
The target is streamed (facedag.sources.media.iter_frames, with a time limit) at `fps` frames per
second, at most `max_samples` frames in all (a long target is sampled more sparsely). The face
to replace is found as convert finds it (facedag.faces.detect.follow_faces with convert's detector
thresholds, policy and tracking) and measured as trim and align measure faces (5-point
alignment, facedag.faces.features.head_pose and face_features through facedag.curation.shots.FaceSampler), so
a target face and a src face with the same pose fall in the same coverage cell. A profile keeps
one row of features per face found (`samples`), not a histogram: trim and dedupe cut them into
their own grids (dedupe's bin counts are its params), and the JSON also carries a histogram on
the default pose x lighting grid for people and the report.

Matching (`cell_weights`, `coverage`, `gaps`)
---------------------------------------------
A cell of a stage's grid is matched to the target on pose (yaw x pitch) and on lighting
(luminance x lighting direction), each on its own (MATCH_FACTORS), never on the joint cell:
luminance and asymmetry also carry the person's skin and the portrait's key light, so a src
may never share the target's exact pose-and-light cell (the demo's never does) and a joint
match would weight nothing. Trim's grid also cuts expression, which is not matched: the
target's few frames would spread too thin. For each factor f, with share_f(m) the target's
share of its faces in cell m of f and K_f the number of cells of f the target occupies:

    weight(cell) = prod over f of (1 + target_weight * K_f * share_f(cell's cell of f))

K_f * share_f is 1 on average over the occupied cells, so `target_weight` 1 makes the target's
typical pose count about twice as much as a pose it never shows (its dominant pose more), and
the same for lighting: a cell of both weighs about (1 + target_weight)^2. A product, not a
sum: a factor that every src face matches (the target and all of src evenly lit) multiplies
every weight alike and changes no choice, where a sum would dilute the pose preference. Cells
the target never shows keep weight 1: they are still covered, the weighting shifts budget
without dropping conditions. `target_weight` 0 gives every cell weight 1, the unweighted
behaviour.

Coverage (`coverage`) is the share of the target's faces whose pose cell (or lighting cell)
holds at least one training face.

Gaps are readable regions, not cells: each bin of each match axis alone ("yaw >= 43 deg",
"luminance < 0.4 (dark)") and each yaw x pitch pose cell whose yaw and pitch bins are not gaps
by themselves (else every pose cell of a missing yaw column would repeat it). A region is a gap
when it holds at least `min_share` of the target's faces and the training faces there are fewer
than `min_faces`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facedag.curation.coverage import Axis, Grid, counts, pose_light_grid

VERSION = 1
# what a cell is matched on: its pose, and its lighting, each on its own (module docstring)
MATCH_FACTORS = (("yaw", "pitch"), ("luminance", "asymmetry"))
MATCH_COLUMNS = tuple(c for f in MATCH_FACTORS for c in f)
# per face found: when, and the features trim/dedupe cells use (roll for the record)
SAMPLE_COLUMNS = ("time", "yaw", "pitch", "roll", "mouth_open", "eyes_open", "luminance", "asymmetry")
GAP_MIN_SHARE = 0.05


@dataclass
class TargetProfile:
    """The face to replace in the target, one row of features per face found.

    `applies` is False in the profile of an identity that is not convert.swap_to: its curation
    is not weighted, and its profile file does not change with the target (so DVC does not
    rerun its trim and dedupe when the target changes). `complete` is False when the decode
    stopped early (a time limit or damage): the samples cover the part before, and `stopped` is
    the reason code (facedag.sources.media's: timeout, undecodable, ...). `frames_sampled`
    counts the sampled frames, with a face or not; `samples` has a row per face found.
    """

    identity: str
    applies: bool
    target: str | None = None
    policy: str = "largest"
    fps: float = 0.0
    duration: float = 0.0
    frames_sampled: int = 0
    complete: bool = True
    stopped: str = ""
    note: str = ""
    samples: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(SAMPLE_COLUMNS)))

    @property
    def faces(self) -> int:
        return len(self.samples)

    @property
    def active(self) -> bool:
        """Whether curation can be weighted toward this profile (it applies and found faces)."""
        return self.applies and self.faces > 0

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (schema in the module docstring of stages/profile.py)."""
        def column(c: str) -> list[float | None]:  # JSON has no NaN: an unmeasured feature is null
            values = self.samples[c].to_numpy(np.float64) if c in self.samples else np.full(self.faces, np.nan)
            return [round(float(v), 4) if math.isfinite(v) else None for v in values]

        samples = {c: column(c) for c in SAMPLE_COLUMNS}
        return {
            "version": VERSION,
            "identity": self.identity,
            "applies": self.applies,
            "note": self.note,
            "target": self.target,
            "policy": self.policy,
            "fps": round(self.fps, 6),
            "duration": round(self.duration, 3),
            "frames_sampled": self.frames_sampled,
            "faces": self.faces,
            "complete": self.complete,
            "stopped": self.stopped,
            "samples": samples,
            "histogram": histogram(self, pose_light_grid()) if self.faces else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TargetProfile:
        raw = data.get("samples") or {}
        samples = pd.DataFrame({c: np.array(raw.get(c, []), dtype=np.float64) for c in SAMPLE_COLUMNS})
        return cls(identity=str(data["identity"]), applies=bool(data["applies"]), target=data.get("target"),
                   policy=str(data.get("policy", "largest")), fps=float(data.get("fps", 0.0)),
                   duration=float(data.get("duration", 0.0)), frames_sampled=int(data.get("frames_sampled", 0)),
                   complete=bool(data.get("complete", True)), stopped=str(data.get("stopped", "")),
                   note=str(data.get("note", "")), samples=samples)


def load_profile(path: str | os.PathLike[str]) -> TargetProfile | None:
    """The profile at `path` (profile@ID's target.json), or None when there is none.

    A file that is not a profile raises ValueError: a silently ignored profile would curate
    without the target and say nothing.
    """
    p = Path(path)
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text())
        if data.get("version") != VERSION:
            raise ValueError(f"version {data.get('version')!r}, expected {VERSION}")
        return TargetProfile.from_dict(data)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{p} is not a target profile ({exc}): rerun the profile stage") from None


def not_applicable(identity: str, swap_to: str) -> TargetProfile:
    """The profile of an identity whose data is not curated toward the target."""
    return TargetProfile(identity=identity, applies=False,
                         note=f"only convert.swap_to ({swap_to}) is curated toward the target")


# -- matching a grid's cells to the target ---------------------------------------------------

def sub_grid(grid: Grid, columns: Iterable[str]) -> Grid | None:
    """The grid of `grid`'s axes on `columns` (in `grid`'s order), or None when it has none of them."""
    wanted = set(columns)
    axes = tuple(a for a in grid.axes if a.column in wanted)
    return Grid(axes) if axes else None


def projection(grid: Grid, sub: Grid) -> np.ndarray:
    """For each cell of `grid`, its cell in `sub` (a grid of some of its axes)."""
    idx = grid.unravel(np.arange(grid.size))
    keep = tuple(idx[grid.columns.index(c)] for c in sub.columns)
    return np.ravel_multi_index(keep, sub.shape).astype(np.int64)


def target_shares(profile: TargetProfile, grid: Grid) -> np.ndarray:
    """Share of the target's faces in each cell of `grid` (sums to 1; zeros without faces)."""
    c = counts(grid.cells(profile.samples), grid.size).astype(np.float64)
    total = c.sum()
    return c / total if total else c


def cell_weights(profile: TargetProfile | None, grid: Grid, target_weight: float) -> np.ndarray | None:
    """Selection weight of each cell of `grid` (module docstring), or None when unweighted.

    None (not an array of ones) when there is no active profile or the weight is 0, so that
    callers take exactly their unweighted path.
    """
    if profile is None or not profile.active or target_weight <= 0:
        return None
    subs = [g for g in (sub_grid(grid, f) for f in MATCH_FACTORS) if g is not None]
    if not subs:
        raise ValueError(f"grid {grid.columns} has none of the match axes {[c for f in MATCH_FACTORS for c in f]}")
    weights = np.ones(grid.size)
    for sub in subs:
        share = target_shares(profile, sub)
        weights *= 1.0 + float(target_weight) * int((share > 0).sum()) * share[projection(grid, sub)]
    return weights


def target_regions(profile: TargetProfile | None, grid: Grid,
                   faces: pd.DataFrame | Mapping[str, Iterable[float]]) -> list[frozenset[tuple[int, int]]] | None:
    """Per face of `faces`, the regions of the target it covers: (k, cell) for each
    MATCH_FACTORS[k] sub-grid of `grid` whose cell holds both the face and target faces (the
    regions the gap report speaks of). None without an active profile. dedupe passes them to
    facedag.curation.curate.holdout_mask, so that the held-out split never takes the last shot of a pose
    or light the target shows."""
    if profile is None or not profile.active:
        return None
    cells = grid.cells(_frame(faces))
    per_face: list[set[tuple[int, int]]] = [set() for _ in range(cells.size)]
    for k, factor in enumerate(MATCH_FACTORS):
        sub = sub_grid(grid, factor)
        if sub is None:
            continue
        occupied = target_shares(profile, sub) > 0
        for i, c in enumerate(projection(grid, sub)[cells].tolist()):
            if occupied[c]:
                per_face[i].add((k, c))
    return [frozenset(r) for r in per_face]


def coverage(profile: TargetProfile, grid: Grid, faces: pd.DataFrame | Mapping[str, Iterable[float]],
             min_faces: int = 1) -> float:
    """Share of the target's faces whose cell of `grid` holds at least `min_faces` of `faces`."""
    if not profile.faces:
        return 0.0
    have = counts(grid.cells(_frame(faces)), grid.size)
    return float((have[grid.cells(profile.samples)] >= min_faces).mean())


# -- readable regions and gaps ---------------------------------------------------------------

UNITS = {"yaw": " deg", "pitch": " deg", "luminance": "", "asymmetry": ""}
# what the open end bins mean, for people (low end, high end)
HINTS = {
    "yaw": ("turned toward the image left", "turned toward the image right"),
    "pitch": ("looking down", "looking up"),
    "luminance": ("dark", "bright"),
    "asymmetry": ("lit from the image right", "lit from the image left"),
}
NAMES = {"asymmetry": "light asymmetry"}


def _num(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 10 else f"{v:.2g}"


def bin_text(axis: Axis, i: int) -> str:
    """One bin of an axis in words: 'yaw >= 43 deg (turned toward the image right)', 'pitch -8..8 deg'."""
    e = axis.edges()
    name, unit = NAMES.get(axis.column, axis.column), UNITS.get(axis.column, "")
    low, high = HINTS.get(axis.column, ("", ""))
    if axis.bins == 1:
        return f"any {name}"
    if i == 0:
        return f"{name} < {_num(e[1])}{unit}" + (f" ({low})" if low else "")
    if i == axis.bins - 1:
        return f"{name} >= {_num(e[-2])}{unit}" + (f" ({high})" if high else "")
    return f"{name} {_num(e[i])}..{_num(e[i + 1])}{unit}"


@dataclass(frozen=True)
class Region:
    """Some bins of a grid's match axes: {column: bin index}, and how it reads."""

    bins: tuple[tuple[str, int], ...]
    text: str

    @property
    def kind(self) -> str:
        return "+".join(c for c, _ in self.bins)


def regions(grid: Grid) -> list[Region]:
    """Each bin of each match axis, then each yaw x pitch cell (when both axes are there)."""
    sub = sub_grid(grid, MATCH_COLUMNS)
    if sub is None:
        return []
    out = [Region(((a.column, i),), bin_text(a, i)) for a in sub.axes for i in range(a.bins)]
    by = {a.column: a for a in sub.axes}
    if "yaw" in by and "pitch" in by:
        out += [Region((("yaw", y), ("pitch", p)), f"{bin_text(by['yaw'], y)}, {bin_text(by['pitch'], p)}")
                for y in range(by["yaw"].bins) for p in range(by["pitch"].bins)]
    return out


def _frame(faces: pd.DataFrame | Mapping[str, Iterable[float]]) -> pd.DataFrame:
    return faces if isinstance(faces, pd.DataFrame) else pd.DataFrame({k: list(v) for k, v in faces.items()})


def _in_region(grid: Grid, table: pd.DataFrame, region: Region) -> np.ndarray:
    by = {a.column: a for a in grid.axes}
    n = len(table)
    mask = np.ones(n, dtype=bool)
    for column, i in region.bins:
        values = table[column] if column in table else np.full(n, np.nan)
        mask &= by[column].index(np.asarray(values, dtype=np.float64)) == i
    return mask


@dataclass(frozen=True)
class Gap:
    """A region the target shows and the training faces barely cover."""

    region: Region
    target_share: float
    target_faces: int
    src_faces: int
    src_faces_in: int | None = None

    def line(self, identity: str = "src", before: str = "before selection", noun: str = "face") -> str:
        """'the target has 18 % of its frames at yaw >= 43 deg (...); src has 2 faces there (9 before dedupe)'."""
        where = "at" if self.region.bins[0][0] in ("yaw", "pitch") else "with"
        text = (f"the target has {round(100 * self.target_share)} % of its frames {where} {self.region.text}; "
                f"{identity} has {self.src_faces} {noun}{'s' if self.src_faces != 1 else ''} there")
        if self.src_faces_in is not None and self.src_faces_in != self.src_faces:
            text += f" ({self.src_faces_in} {before})"
        return text


def region_table(profile: TargetProfile, grid: Grid, faces: pd.DataFrame | Mapping[str, Iterable[float]],
                 faces_in: pd.DataFrame | Mapping[str, Iterable[float]] | None = None) -> list[dict[str, Any]]:
    """Per region (`regions`): the target's faces and share there, and the training faces there."""
    kept = _frame(faces)
    before = _frame(faces_in) if faces_in is not None else None
    rows = []
    for region in regions(grid):
        t = int(_in_region(grid, profile.samples, region).sum())
        rows.append({
            "region": region,
            "target_faces": t,
            "target_share": t / profile.faces if profile.faces else 0.0,
            "src_faces": int(_in_region(grid, kept, region).sum()),
            "src_faces_in": None if before is None else int(_in_region(grid, before, region).sum()),
        })
    return rows


def gaps(profile: TargetProfile, grid: Grid, faces: pd.DataFrame | Mapping[str, Iterable[float]],
         faces_in: pd.DataFrame | Mapping[str, Iterable[float]] | None = None, *,
         min_share: float = GAP_MIN_SHARE, min_faces: int = 10) -> list[Gap]:
    """The regions with >= min_share of the target's faces and fewer than min_faces of `faces`,
    largest target share first (`faces_in`: the faces before selection, for the message)."""
    if not profile.faces:
        return []
    rows = region_table(profile, grid, faces, faces_in)
    short = [r for r in rows if r["target_share"] >= min_share - 1e-12 and r["src_faces"] < min_faces]
    single = {r["region"].bins[0] for r in short if len(r["region"].bins) == 1}
    out = [Gap(r["region"], r["target_share"], r["target_faces"], r["src_faces"], r["src_faces_in"]) for r in short
           if len(r["region"].bins) == 1 or not any(b in single for b in r["region"].bins)]
    return sorted(out, key=lambda g: (-g.target_share, len(g.region.bins)))


def gap_report(
    profile: TargetProfile | None,
    grid: Grid,
    faces: pd.DataFrame | Mapping[str, Iterable[float]],
    faces_in: pd.DataFrame | Mapping[str, Iterable[float]] | None,
    *,
    identity: str,
    stage: str,
    target_weight: float,
    min_faces: int,
    before: str = "before selection",
    noun: str = "face",
    min_share: float = GAP_MIN_SHARE,
) -> dict[str, Any]:
    """target_gaps.json of a curation stage (schema in the README) and its log lines (`lines`)."""
    report: dict[str, Any] = {
        "version": VERSION, "stage": stage, "identity": identity, "weighted": False, "target_weight": target_weight,
        "target": None, "target_faces": 0, "frames_sampled": 0, "complete": True, "min_share": min_share,
        "min_faces": min_faces, "coverage": None, "coverage_in": None, "coverage_light": None, "gaps": [],
        "regions": [], "lines": [], "note": "",
    }
    if profile is None:
        report["note"] = "no target profile: curation is not weighted toward the target"
        return report
    report.update(target=profile.target, target_faces=profile.faces, frames_sampled=profile.frames_sampled,
                  complete=profile.complete, note=profile.note)
    if not profile.active:
        return report
    report["weighted"] = target_weight > 0
    kept = _frame(faces)
    pose, light = (sub_grid(grid, f) for f in MATCH_FACTORS)
    if pose is not None:
        report["coverage"] = round(coverage(profile, pose, kept), 4)
        if faces_in is not None:
            report["coverage_in"] = round(coverage(profile, pose, _frame(faces_in)), 4)
    if light is not None:
        report["coverage_light"] = round(coverage(profile, light, kept), 4)
    found = gaps(profile, grid, kept, faces_in, min_share=min_share, min_faces=min_faces)
    report["gaps"] = [{"region": g.region.text, "bins": dict(g.region.bins), "target_share": round(g.target_share, 4),
                       "target_faces": g.target_faces, "src_faces": g.src_faces, "src_faces_in": g.src_faces_in,
                       "line": g.line(identity, before, noun)} for g in found]
    report["regions"] = [{"region": r["region"].text, "kind": r["region"].kind, "bins": dict(r["region"].bins),
                          "target_share": round(r["target_share"], 4), "target_faces": r["target_faces"],
                          "src_faces": r["src_faces"], "src_faces_in": r["src_faces_in"]}
                         for r in region_table(profile, grid, kept, faces_in) if len(r["region"].bins) == 1]
    report["lines"] = [g["line"] for g in report["gaps"]]
    return report


def gap_metrics(report: Mapping[str, Any]) -> dict[str, Any]:
    """The target figures of a stage's metrics.json, from its gap_report (figures it could not
    measure are left out rather than null, which `dvc metrics diff` cannot compare)."""
    metrics = {
        "target_weighted": report["weighted"],
        "target_faces": report["target_faces"],
        "target_coverage": report["coverage"],
        "target_coverage_in": report["coverage_in"],
        "target_coverage_light": report["coverage_light"],
        "target_gaps": len(report["gaps"]),
    }
    return {k: v for k, v in metrics.items() if v is not None}


def histogram(profile: TargetProfile, grid: Grid) -> dict[str, Any]:
    """The target's faces on `grid`: axes, the occupied cells (count, share, label) and per-axis marginals."""
    c = counts(grid.cells(profile.samples), grid.size)
    total = max(int(c.sum()), 1)
    cells = [{"cell": int(k), "label": grid.label(int(k)), "count": int(c[k]), "share": round(int(c[k]) / total, 4)}
             for k in sorted(np.flatnonzero(c).tolist(), key=lambda k: (-c[k], k))]
    marginals = {}
    for a, idx in zip(grid.axes, grid.unravel(np.flatnonzero(c)), strict=True):
        m = np.bincount(idx, weights=c[np.flatnonzero(c)], minlength=a.bins).astype(int)
        marginals[a.column] = {"edges": [round(float(e), 4) for e in a.edges()], "counts": m.tolist(),
                               "shares": [round(int(v) / total, 4) for v in m]}
    return {"axes": [{"column": a.column, "lo": a.lo, "hi": a.hi, "bins": a.bins} for a in grid.axes],
            "cells": cells, "marginals": marginals}


def log_lines(report: Mapping[str, Any], prefix: str, before: str = "before selection") -> list[str]:
    """What a curation stage prints about the target: a summary, then one line per gap."""
    if report["coverage"] is None:  # no profile, not this identity's, or no face in the target
        return [f"{prefix}: target: {report['note']}"]

    def pct(v: float) -> str:
        return f"{round(100 * v)} %"

    weighted = f"weighted {report['target_weight']:g}" if report["weighted"] else "not weighted"
    head = (f"{prefix}: target: {report['target_faces']} faces in {report['frames_sampled']} sampled frames, "
            f"{weighted}; {pct(report['coverage'])} of its frames have a {report['identity']} face in their pose cell")
    if report["coverage_in"] is not None:
        head += f" ({pct(report['coverage_in'])} {before})"
    if report["coverage_light"] is not None:
        head += f", {pct(report['coverage_light'])} in their lighting cell"
    head += f"; {len(report['gaps'])} gap(s)"
    return [head, *(f"{prefix}: target gap: {line}" for line in report["lines"])]
