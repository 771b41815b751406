"""trim@ID: keep the shots of an identity's clips that add the most pose/expression/lighting
coverage, up to `trim.max_seconds`, and cut them out.

    python -m stages.trim ID [--params params.yaml]

Reads  data/download/ID/manifest.parquet and the clips it lists (its `path` column, relative
       to the project root; a clip listed twice, `duplicate`, is scanned once), and
       data/profile/ID/target.json when there is one (profile@ID: the target's faces)
Writes data/trim/ID/
         clips/<shot>.mp4     the kept shots, re-encoded at a constant frame rate (download may
                              store a variable-rate source as it came: only what is kept is
                              normalised)
         selection.parquet    one row per shot segment (below)
         coverage.png         coverage before/after (facedag.report.figures.trim_coverage_figure)
         target_gaps.json     the target's poses and lighting against the kept samples
                              (facedag.curation.target_profile.gap_report)
         metrics.json         counts, seconds, cells covered, and the target_* figures
         rejected.jsonl       clips that cannot be used (reasons below)

Per clip, one decoding pass finds the cuts (PySceneDetect ContentDetector) and samples
frames at `trim.sample_fps` for faces; shots longer than `max_shot_seconds` (or than the whole
budget) are split into equal segments, shorter than `min_shot_seconds` dropped; then the
segments are kept greedily by new coverage cells per second (facedag.curation.trim,
facedag.curation.shots, facedag.curation.coverage.trim_grid).

Toward the target: when ID is the identity convert paints into the target (its profile
applies) and `trim.target_weight` > 0, a new cell counts its weight (facedag.curation.target_profile.
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
    cells        int      coverage cells its faces occupy (facedag.curation.coverage.trim_grid)
    score        float64  gain per second when picked (or the last computed, when not kept)
    gain         float64  new cells (each counting its target weight, when weighted)
                          + trim.repeat_weight * faces at that moment
    new_cells    int      cells it added (when picked)
    kept         bool     kept and cut
    rank         int32    pick order (1 = first), 0 when not kept
    reason       string   "" when kept, else no_face, too_short, over_budget, cut_failed
    clip         string   file name of the cut clip in clips/ (kept rows; null otherwise)

Reason codes in rejected.jsonl: the probe/decode codes of facedag.sources.media (not_found,
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

import pandas as pd

from facedag.curation.coverage import summary, trim_grid
from facedag.curation.shots import FaceSampler, select_shots
from facedag.curation.target_profile import cell_weights, gap_metrics, gap_report, load_profile, log_lines
from facedag.curation.trim import apply_picks, coverage_curve, face_table, scan_clips, selection_table
from facedag.params import Params
from facedag.records import Rejected, Rejections, StageFailed, atomic_path, atomic_write_json, write_metrics
from facedag.report.figures import trim_coverage_figure
from facedag.sources.media import constant_rate, cut_clip
from facedag.stagekit import fresh_dir, identity_main

STAGE = "trim"
PROFILE_DIR = Path("data/profile")


def run(params: Params, identity: str) -> None:
    p = params.trim
    manifest_path = Path("data/download") / identity / "manifest.parquet"
    if not manifest_path.is_file():
        raise StageFailed(f"{manifest_path} not found: run download@{identity} first")
    manifest = pd.read_parquet(manifest_path)
    try:
        profile = load_profile(PROFILE_DIR / identity / "target.json")
    except ValueError as exc:
        raise StageFailed(str(exc)) from None
    out = fresh_dir(Path("data/trim") / identity)
    rejected = Rejections(out, STAGE)
    grid = trim_grid()

    with FaceSampler(params.base.face_size, p.score_threshold, p.min_face_size,
                     landmarker=params.align.landmarker) as sampler:  # fmt: skip
        scan = scan_clips(manifest.to_dict("records"), p, sampler, grid, rejected.add)
    picks = select_shots(scan.candidates, p.max_seconds, p.repeat_weight, cell_weights(profile, grid, p.target_weight))
    kept = apply_picks(scan, picks)
    if not kept:
        rejected.close()
        raise StageFailed(f"no shot kept: {scan.clips_used} of {len(manifest)} clip(s) usable, {len(rejected)} "
                          f"rejected (see {rejected.path})")

    clip_dir = out / "clips"
    clip_dir.mkdir()
    for row in kept:
        dst = clip_dir / f"{row['shot']}.mp4"
        try:
            with atomic_path(dst) as tmp:
                cut_clip(row["source_path"], tmp, row["start"], row["end"], crf=p.crf, preset=p.preset,
                         fps=constant_rate(row["_fps"]))
        except Rejected as exc:
            rejected.add(row["shot"], "cut_failed", f"{exc.reason}: {exc.message}")
            row.update(kept=False, reason="cut_failed")
            continue
        row["clip"] = dst.name
    kept = [r for r in kept if r["kept"]]
    if not kept:
        rejected.close()
        raise StageFailed(f"no shot could be cut (see {rejected.path})")

    before, after = face_table(scan.faces), face_table(f for r in kept for f in r["_faces"])
    curve_s, curve_c = coverage_curve(kept, grid)
    trim_coverage_figure(out / "coverage.png", grid, before, after, curve_s, curve_c, scan.seconds)
    with atomic_path(out / "selection.parquet") as tmp:
        selection_table(scan.rows).to_parquet(tmp, index=False)
    cov_all, cov_kept = summary(grid.cells(before), grid), summary(grid.cells(after), grid)
    target = gap_report(profile, grid, after, before, identity=identity, stage=STAGE, target_weight=p.target_weight,
                        min_faces=p.target_gap_faces, before="in all shots", noun="sampled face")
    atomic_write_json(out / "target_gaps.json", target)
    seconds_kept = round(float(sum(r["duration"] for r in kept)), 3)
    write_metrics(out, {
        "clips_in": len(manifest),
        "clips_used": scan.clips_used,
        "clips_rejected": len({r["item"] for r in rejected.rows if r["reason"] != "cut_failed"}),
        "shots": len(scan.rows),
        "shots_kept": len(kept),
        "seconds_in": round(scan.seconds, 3),
        "seconds_kept": seconds_kept,
        "samples": scan.samples,
        "samples_with_face": len(before),
        "cells_total": grid.size,
        "cells_covered_in": cov_all["cells_covered"],
        "cells_covered_kept": cov_kept["cells_covered"],
        "entropy_bits_in": cov_all["entropy_bits"],
        "entropy_bits_kept": cov_kept["entropy_bits"],
        **gap_metrics(target),
        "rejected": len(rejected),
    })  # fmt: skip
    rejected.close()
    head, *gap_lines = log_lines(target, f"trim@{identity}", "in all shots")
    print(head, flush=True)
    for line in gap_lines:
        print(line, file=sys.stderr, flush=True)
    print(f"trim@{identity}: kept {len(kept)} of {len(scan.rows)} shots, {seconds_kept:.1f} of {scan.seconds:.1f} s, "
          f"{cov_kept['cells_covered']} of {cov_all['cells_covered']} cells", flush=True)


if __name__ == "__main__":
    identity_main(STAGE, run)
