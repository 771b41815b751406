"""trim@ID: keep the shots of an identity's clips that add the most pose/expression/lighting
coverage, up to `trim.max_seconds`, and cut them out.

    python -m stages.trim ID [--params params.yaml]

Reads  data/download/ID/manifest.parquet and the clips it lists (its `path` column, relative
       to the project root; a clip listed twice, `duplicate`, is scanned once), and
       data/profile/ID/target.json when there is one (profile@ID: the target's faces)
Writes data/trim/ID/
         clips/<shot>.mp4     the kept shots, re-encoded
         selection.parquet    one row per shot segment (below)
         coverage.png         coverage before/after (facedag.report.trim_coverage_figure)
         target_gaps.json     the target's poses and lighting against the kept samples
                              (facedag.target_profile.gap_report)
         metrics.json         counts, seconds, cells covered, and the target_* figures
         rejected.jsonl       clips that cannot be used (reasons below)

Per clip, one decoding pass finds the cuts (PySceneDetect ContentDetector) and samples
frames at `trim.sample_fps` for faces (facedag.shots.scan_clip / FaceSampler). Shots longer
than `max_shot_seconds` (or than the whole budget) are split into equal segments, shorter
than `min_shot_seconds` dropped; then facedag.shots.select_shots keeps segments greedily by
new coverage cells per second (facedag.coverage.trim_grid).

Toward the target: when ID is the identity convert paints into the target (its profile
applies) and `trim.target_weight` > 0, a new cell counts its weight (facedag.target_profile.
cell_weights: more for the poses and lighting the target's face shows), so the budget goes
first to shots that cover the target. Whatever the weight, the kept samples are compared with
the target: coverage figures in metrics.json, and one log line and one entry of
target_gaps.json per region that holds >= 5 % of the target's frames and fewer than
`trim.target_gap_faces` kept samples. Without a profile, or for another identity, selection
is unweighted and the log says so.

selection.parquet columns:
    shot         string   "<sha256[:16]>_<segment>", unique
    source       string   the clip's uri (from the manifest)
    sha256       string   the downloaded clip's sha256
    source_path  string   the downloaded clip's path
    scene        int      index of the detected shot the segment was cut from
    start, end, duration  float64 seconds in the downloaded clip
    samples      int      frames sampled in the segment; faces: those with a usable face
    cells        int      coverage cells its faces occupy (facedag.coverage.trim_grid)
    score        float64  gain per second when picked (or the last computed, when not kept)
    gain         float64  new cells (each counting its target weight, when weighted)
                          + trim.repeat_weight * faces at that moment
    new_cells    int      cells it added (when picked)
    kept         bool     kept and cut
    rank         int32    pick order (1 = first), 0 when not kept
    reason       string   "" when kept, else no_face, too_short, over_budget, cut_failed
    clip         string   file name of the cut clip in clips/ (kept rows; null otherwise)

Reason codes in rejected.jsonl: the probe/decode codes of facedag.media (not_found,
empty_file, not_a_video, no_video_stream, undecodable, too_short), `no_face` (no usable
face in any sample of the clip), `no_shot` (every shot shorter than min_shot_seconds),
`cut_failed` (a kept shot that ffmpeg could not cut; the item is the shot), `internal_error`
(anything unforeseen while reading a clip; the other clips go on). A manifest row
whose clip file is missing is `not_found`. Shots in selection.parquet that are not kept say
why in `reason`: `no_face`, `too_short`, `over_budget`, `cut_failed`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facedag.coverage import summary, trim_grid
from facedag.media import cut_clip, iter_frames, probe, work_timeout
from facedag.params import Params
from facedag.records import Rejected, Rejections, StageFailed, atomic_path, atomic_write_json, write_metrics
from facedag.report import trim_coverage_figure
from facedag.shots import FACE_COLUMNS, Candidate, FaceSampler, scan_clip, segment, select_shots, shots_from_cuts
from facedag.stagekit import fresh_dir, identity_main
from facedag.target_profile import cell_weights, gap_metrics, gap_report, load_profile, log_lines

STAGE = "trim"
PROFILE_DIR = Path("data/profile")
# until params.Trim has them (0 weight = unweighted; gap: fewer kept samples than this)
DEFAULT_TARGET_WEIGHT = 1.0
DEFAULT_TARGET_GAP_FACES = 2


def run(params: Params, identity: str) -> None:
    p = params.trim
    in_dir = Path("data/download") / identity
    manifest_path = in_dir / "manifest.parquet"
    if not manifest_path.is_file():
        raise StageFailed(f"{manifest_path} not found: run download@{identity} first")
    manifest = pd.read_parquet(manifest_path)
    out = fresh_dir(Path("data/trim") / identity)
    rejected = Rejections(out, STAGE)
    grid = trim_grid()
    target_weight = float(getattr(p, "target_weight", DEFAULT_TARGET_WEIGHT))
    try:
        profile = load_profile(PROFILE_DIR / identity / "target.json")
    except ValueError as exc:
        raise StageFailed(str(exc)) from None
    weights = cell_weights(profile, grid, target_weight)
    sampler = FaceSampler(params.base.face_size, p.score_threshold, p.min_face_size)
    # a segment never exceeds the whole budget, so the best one always fits
    seg_max = min(p.max_shot_seconds, p.max_seconds)

    rows: list[dict[str, Any]] = []
    cands: list[Candidate] = []
    faces_all: list[dict[str, float]] = []
    clips_ok = 0
    seconds_in = 0.0
    samples_total = 0
    seen: set[str] = set()
    for rec in manifest.to_dict("records"):
        src = Path(rec["path"])  # repo-relative, as download@ID writes it
        sha, item = str(rec["sha256"]), str(rec["uri"])
        if sha in seen:  # two sources that gave the same clip: scan and keep it once
            continue
        seen.add(sha)
        try:
            info = probe(src)
            frames = iter_frames(src, timeout=work_timeout(info.duration))
            scan = scan_clip(frames, info.fps, p.scene_threshold, p.min_shot_seconds, p.sample_fps, analyze=sampler)
        except Rejected as exc:
            rejected.add(item, exc.reason, exc.message)
            continue
        except Exception as exc:  # an unforeseen input must not stop the other clips
            rejected.add(item, "internal_error", f"{type(exc).__name__}: {exc}"[:300])
            continue
        samples_total += len(scan.samples)
        if scan.frames == 0:
            rejected.add(item, "undecodable", "no video frame decodes")
            continue
        times = np.array([t for t, _ in scan.samples], dtype=np.float64)
        faces = [f for _, f in scan.samples]
        if not any(f is not None for f in faces):
            rejected.add(item, "no_face", f"no usable face in any of {len(faces)} sampled frames")
            continue
        shots = shots_from_cuts(sha[:16], scan.cuts, scan.duration)
        segments, short = segment(shots, seg_max, p.min_shot_seconds)
        if not segments:
            rejected.add(item, "no_shot", f"all {len(shots)} shots are shorter than {p.min_shot_seconds:g} s")
            continue
        clips_ok += 1
        seconds_in += scan.duration
        for s in segments:
            inside = np.flatnonzero((times >= s.start - 1e-6) & (times < s.end - 1e-6))
            recs = [faces[i] for i in inside if faces[i] is not None]
            table = pd.DataFrame(recs, columns=list(FACE_COLUMNS)) if recs else pd.DataFrame(columns=list(FACE_COLUMNS))
            cells = grid.cells(table)
            faces_all.extend(recs)
            cands.append(Candidate(key=len(rows), duration=s.duration, cells=cells, samples=int(inside.size)))
            rows.append({
                "shot": f"{sha[:16]}_{s.index:04d}", "source": item, "sha256": sha, "scene": s.scene,
                "start": s.start, "end": s.end, "duration": s.duration, "samples": int(inside.size),
                "faces": len(recs), "cells": int(np.unique(cells).size), "source_path": str(src),
                "_faces": recs,
            })
        for s in short:
            rows.append({
                "shot": f"{sha[:16]}_short{s.index:04d}", "source": item, "sha256": sha, "scene": s.index,
                "start": s.start, "end": s.end, "duration": s.duration, "samples": 0, "faces": 0, "cells": 0,
                "source_path": str(src), "_faces": [], "_reason": "too_short",
            })

    # select over all clips of the identity at once: the budget is per identity
    picks = select_shots(cands, p.max_seconds, p.repeat_weight, weights)
    for cand, pick in zip(cands, picks, strict=True):
        rows[cand.key].update(kept=pick.kept, rank=pick.rank, score=round(pick.score, 6), gain=round(pick.gain, 6),
                              new_cells=pick.new_cells, reason=pick.reason)
    for row in rows:
        if "kept" not in row:
            row.update(kept=False, rank=0, score=0.0, gain=0.0, new_cells=0, reason=row.pop("_reason", "too_short"))
        row.pop("_reason", None)
        row["clip"] = None

    kept_rows = sorted((r for r in rows if r["kept"]), key=lambda r: r["rank"])
    if not kept_rows:
        rejected.close()
        raise StageFailed(f"no shot kept: {clips_ok} of {len(manifest)} clip(s) usable, {len(rejected)} rejected "
                          f"(see {rejected.path})")
    clip_dir = out / "clips"
    clip_dir.mkdir()
    for row in kept_rows:
        dst = clip_dir / f"{row['shot']}.mp4"
        try:
            with atomic_path(dst) as tmp:
                cut_clip(row["source_path"], tmp, row["start"], row["end"], crf=p.crf)
        except Rejected as exc:
            rejected.add(row["shot"], "cut_failed", f"{exc.reason}: {exc.message}")
            row.update(kept=False, reason="cut_failed")
            continue
        row["clip"] = dst.name
    kept_rows = [r for r in kept_rows if r["kept"]]
    if not kept_rows:
        rejected.close()
        raise StageFailed(f"no shot could be cut (see {rejected.path})")

    # coverage before (all segments) and after (kept), and the greedy curve
    kept_faces = [f for r in kept_rows for f in r["_faces"]]
    before = pd.DataFrame(faces_all, columns=list(FACE_COLUMNS))
    after = pd.DataFrame(kept_faces, columns=list(FACE_COLUMNS))
    covered: set[int] = set()
    curve_s, curve_c, acc = [], [], 0.0
    for r in kept_rows:
        covered.update(grid.cells(pd.DataFrame(r["_faces"], columns=list(FACE_COLUMNS))).tolist())
        acc += r["duration"]
        curve_s.append(acc)
        curve_c.append(len(covered))
    trim_coverage_figure(out / "coverage.png", grid, before, after, curve_s, curve_c, seconds_in)

    table = pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    table = table.sort_values(["sha256", "start"], kind="stable").reset_index(drop=True)
    table["rank"] = table["rank"].astype("int32")
    with atomic_path(out / "selection.parquet") as tmp:
        table.to_parquet(tmp, index=False)

    cov_all, cov_kept = summary(grid.cells(before), grid), summary(grid.cells(after), grid)
    gap_faces = int(getattr(p, "target_gap_faces", DEFAULT_TARGET_GAP_FACES))
    target = gap_report(profile, grid, after, before, identity=identity, stage=STAGE, target_weight=target_weight,
                        min_faces=gap_faces, before="in all shots", noun="sampled face")
    atomic_write_json(out / "target_gaps.json", target)
    write_metrics(out, {
        "clips_in": len(manifest),
        "clips_used": clips_ok,
        "clips_rejected": len({r["item"] for r in rejected.rows if r["reason"] != "cut_failed"}),
        "shots": len(rows),
        "shots_kept": len(kept_rows),
        "seconds_in": round(seconds_in, 3),
        "seconds_kept": round(float(sum(r["duration"] for r in kept_rows)), 3),
        "samples": samples_total,
        "samples_with_face": len(before),
        "cells_total": grid.size,
        "cells_covered_in": cov_all["cells_covered"],
        "cells_covered_kept": cov_kept["cells_covered"],
        "entropy_bits_in": cov_all["entropy_bits"],
        "entropy_bits_kept": cov_kept["entropy_bits"],
        **gap_metrics(target),
        "rejected": len(rejected),
    })
    rejected.close()
    head, *gap_lines = log_lines(target, f"trim@{identity}", "in all shots")
    print(head, flush=True)
    for line in gap_lines:
        print(line, file=sys.stderr, flush=True)
    print(f"trim@{identity}: kept {len(kept_rows)} of {len(rows)} shots, "
          f"{sum(r['duration'] for r in kept_rows):.1f} of {seconds_in:.1f} s, "
          f"{cov_kept['cells_covered']} of {cov_all['cells_covered']} cells", flush=True)


if __name__ == "__main__":
    identity_main(STAGE, run)
