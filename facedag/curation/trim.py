"""trim@ID's choice: which shots of an identity's clips to keep, and the bookkeeping around it.

Per clip, one decoding pass finds the cuts and samples faces (facedag.curation.shots.scan_clip over
facedag.sources.media.scan_frames: reference frames only when `trim.reference_only`, each scaled to
the detector's width as it is converted, full-size frames only on the sample grid);
the clip's shots are split into segments of at most `max_shot_seconds` (or the whole budget),
shorter than `min_shot_seconds` dropped; every segment becomes a candidate with the coverage
cells its faces occupy. Then facedag.curation.shots.select_shots keeps candidates greedily by new
(optionally target-weighted) cells per second, over all clips at once: the budget is per
identity. A clip that cannot be read, or has no usable face or shot, is reported through the
`reject(item, reason, message)` callback and the others go on.

The rows here become selection.parquet (see stages/trim.py for its columns); keys starting with
`_` stay in memory (the segment's sampled faces, a reason decided before selection).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facedag.curation.coverage import Grid
from facedag.curation.shots import (
    DETECT_WIDTH,
    FACE_COLUMNS,
    Candidate,
    FaceSampler,
    Pick,
    scan_clip,
    segment,
    shots_from_cuts,
)
from facedag.params import Trim
from facedag.progress import counter
from facedag.records import Rejected
from facedag.sources.media import ScanFrame, probe, scan_frames, work_timeout

Reject = Callable[[str, str, str], None]


@dataclass
class ShotScan:
    """Every clip of an identity, scanned: one row and (for segments long enough) one candidate per segment."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    faces: list[dict[str, float]] = field(default_factory=list)  # every usable sampled face
    clips_used: int = 0
    seconds: float = 0.0  # duration of the usable clips
    samples: int = 0  # frames sampled


def face_table(faces: Iterable[Mapping[str, float]]) -> pd.DataFrame:
    """Sampled faces as a table of their coverage features."""
    return pd.DataFrame(list(faces), columns=list(FACE_COLUMNS))


def _with_progress(frames: Iterator[ScanFrame], duration: float, name: str) -> Iterator[ScanFrame]:
    """The frames, with a bar in seconds of the clip (and the time left) on a terminal."""
    bar = counter(max(1, round(duration)), desc=f"trim {name[:12]}", unit="s")
    done = 0
    try:
        for frame in frames:
            now = min(int(frame.time), bar.total)
            if now > done:
                bar.update(now - done)
                done = now
            yield frame
    finally:
        bar.close()


def scan_clips(manifest: Iterable[Mapping[str, Any]], p: Trim, sampler: FaceSampler, grid: Grid,
               reject: Reject) -> ShotScan:
    """Scan each clip of download's manifest once (a clip listed twice, `duplicate`, once) into
    segments; unusable clips go to `reject` with media's reason codes, `no_face`, `no_shot` or
    `internal_error`."""
    scan = ShotScan()
    seg_max = min(p.max_shot_seconds, p.max_seconds)  # a segment never exceeds the whole budget
    seen: set[str] = set()
    for rec in manifest:
        src = Path(rec["path"])  # repo-relative, as download@ID writes it
        sha, item = str(rec["sha256"]), str(rec["uri"])
        if sha in seen:
            continue
        seen.add(sha)
        try:
            info = probe(src)
            frames = scan_frames(src, DETECT_WIDTH, p.sample_fps, p.reference_only, work_timeout(info.duration))
            clip = scan_clip(_with_progress(frames, info.duration, src.name), info.fps, p.scene_threshold,
                             p.min_shot_seconds, p.sample_fps, analyze=sampler)  # fmt: skip
        except Rejected as exc:
            reject(item, exc.reason, exc.message)
            continue
        except Exception as exc:  # an unforeseen input must not stop the other clips
            reject(item, "internal_error", f"{type(exc).__name__}: {exc}"[:300])
            continue
        scan.samples += len(clip.samples)
        if clip.frames == 0:
            reject(item, "undecodable", "no video frame decodes")
            continue
        times = np.array([t for t, _ in clip.samples], dtype=np.float64)
        faces = [f for _, f in clip.samples]
        if not any(f is not None for f in faces):
            reject(item, "no_face", f"no usable face in any of {len(faces)} sampled frames")
            continue
        shots = shots_from_cuts(sha[:16], clip.cuts, clip.duration, clip.ends)
        segments, short = segment(shots, seg_max, p.min_shot_seconds)
        if not segments:
            reject(item, "no_shot", f"all {len(shots)} shots are shorter than {p.min_shot_seconds:g} s")
            continue
        scan.clips_used += 1
        scan.seconds += clip.duration
        base = {"source": item, "sha256": sha, "source_path": str(src), "_fps": info.fps}
        for s in segments:
            inside = np.flatnonzero((times >= s.start - 1e-6) & (times < s.end - 1e-6))
            recs = [faces[i] for i in inside if faces[i] is not None]
            cells = grid.cells(face_table(recs))
            scan.faces.extend(recs)
            scan.candidates.append(Candidate(key=len(scan.rows), duration=s.duration, cells=cells,
                                             samples=int(inside.size)))
            scan.rows.append({
                "shot": f"{sha[:16]}_{s.index:04d}", **base, "scene": s.scene, "start": s.start, "end": s.end,
                "duration": s.duration, "samples": int(inside.size), "faces": len(recs),
                "cells": int(np.unique(cells).size), "_faces": recs,
            })  # fmt: skip
        for s in short:
            scan.rows.append({
                "shot": f"{sha[:16]}_short{s.index:04d}", **base, "scene": s.index, "start": s.start, "end": s.end,
                "duration": s.duration, "samples": 0, "faces": 0, "cells": 0, "_faces": [], "_reason": "too_short",
            })  # fmt: skip
    return scan


def apply_picks(scan: ShotScan, picks: list[Pick]) -> list[dict[str, Any]]:
    """Write select_shots' verdicts into the rows; the kept rows, in pick order."""
    for cand, pick in zip(scan.candidates, picks, strict=True):
        scan.rows[cand.key].update(kept=pick.kept, rank=pick.rank, score=round(pick.score, 6),
                                   gain=round(pick.gain, 6), new_cells=pick.new_cells, reason=pick.reason)
    for row in scan.rows:
        if "kept" not in row:
            row.update(kept=False, rank=0, score=0.0, gain=0.0, new_cells=0, reason=row.pop("_reason", "too_short"))
        row.pop("_reason", None)
        row["clip"] = None
    return sorted((r for r in scan.rows if r["kept"]), key=lambda r: r["rank"])


def coverage_curve(kept: list[dict[str, Any]], grid: Grid) -> tuple[list[float], list[int]]:
    """Seconds kept against cells covered, shot by shot in pick order (the report's greedy curve)."""
    covered: set[int] = set()
    seconds, cells, acc = [], [], 0.0
    for row in kept:
        covered.update(grid.cells(face_table(row["_faces"])).tolist())
        acc += row["duration"]
        seconds.append(acc)
        cells.append(len(covered))
    return seconds, cells


def selection_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """selection.parquet: every segment, by clip and start (in-memory keys dropped)."""
    table = pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    table = table.sort_values(["sha256", "start"], kind="stable").reset_index(drop=True)
    table["rank"] = table["rank"].astype("int32")
    return table
