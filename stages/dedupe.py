"""dedupe@ID: a clean, varied training set from the aligned faces, and a held-out set beside it.

    python -m stages.dedupe ID [--params params.yaml]

Reads  data/align/ID/aligned.parquet (stages/align.py's table), in record batches,
       data/trim/ID/selection.parquet (which detected shot each clip was cut from), and
       data/profile/ID/target.json when there is one (profile@ID: the target's faces)
Writes data/dedupe/ID/
         dataset.parquet   the training faces: every aligned column (image bytes included) plus
                           bin (int32, cell of facedag.curation.coverage.pose_light_grid),
                           bin_label (string), phash (16 hex digits), rank (int32,
                           selection order, 1 = first)
         holdout.parquet   the held-out faces, same columns (rank within the held-out set);
                           no row when nothing could be held out. Training never sees them:
                           it scores its checkpoints on them (facedag.training.loop)
         report.png        pose scatter before/after, lighting histogram, bin occupancy,
                           contact sheet of kept faces (facedag.report.figures.dedupe_figure)
         target_gaps.json  the target's poses and lighting against the training faces
                           (facedag.curation.target_profile.gap_report)
         metrics.json      faces_in, undecodable, identity_outliers, blurry, duplicates, near_holdout, over_budget,
                           kept, faces_holdout, shots, shots_holdout, clips_holdout, no_holdout,
                           bins_covered, bins_total, entropy_bits (kept), entropy_bits_in
                           (all decodable faces), evenness, and the target_* figures
                           (facedag.curation.target_profile.gap_metrics)
         rejected.jsonl    one line per dropped face (item = the face id)

Steps: facedag.curation.dedupe (held-out shots, blur, near-copies of held-out faces,
near-duplicates, the balanced budget).

Toward the target: when ID is the identity convert paints into the target (its profile
applies) and `dedupe.target_weight` > 0, the training side's round robin is weighted toward the
bins of the target's poses and lighting (facedag.curation.target_profile.cell_weights, facedag.curation.curate.
balance); the held-out side is not, and no shot is held out while it is the last with faces in
a pose or lighting region the target shows (facedag.curation.target_profile.target_regions, facedag.
curate.holdout_mask). Whatever the weight, the training faces are compared with
the target: coverage figures in metrics.json, and one log line and one entry of
target_gaps.json per region that holds >= 5 % of the target's frames and fewer than
`dedupe.target_gap_faces` training faces ("... src has 2 faces there (9 before dedupe)").

Who the faces are: before anything else, faces whose SFace embedding is far from the
identity's mean (cosine below `dedupe.identity_outlier`; -1 turns it off) are dropped as
`identity_outlier` (facedag.curation.identity_outliers): someone else who slipped into a track,
a misdetection. metrics.json counts them (`identity_outliers`).

Reason codes: `identity_outlier`, `blurry`, `near_duplicate` (message names the kept face), `near_holdout` (a
training face that nearly copies a face of a held-out shot), `over_budget` (a valid face that
the balanced budget left out), `undecodable_image` (image bytes that do not decode). Messages
of held-out faces say so. Fails with one line when no training face is kept.

Memory: images are decoded one batch at a time; only a 64-bit hash, a 16x16 thumbnail and
the feature columns stay per face. A second pass over the table writes the kept rows.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from facedag.curation.coverage import pose_light_grid, summary
from facedag.curation.dedupe import FaceScan, choose, reasons, scan_faces, shot_of_clip, write_split
from facedag.curation.identity_outliers import drop_faces, identity_check
from facedag.curation.target_profile import (
    cell_weights,
    gap_metrics,
    gap_report,
    load_profile,
    log_lines,
    target_regions,
)
from facedag.faces.identity import Embedder
from facedag.params import Params
from facedag.records import Rejections, StageFailed, atomic_path, atomic_write_json, write_metrics
from facedag.report.figures import dedupe_figure
from facedag.stagekit import fresh_dir, identity_main
from facedag.tables import ALIGNED_SCHEMA, missing_columns

STAGE = "dedupe"
SHEET_MAX = 60
PROFILE_DIR = Path("data/profile")


def run(params: Params, identity: str) -> None:
    p = params.dedupe
    src = Path("data/align") / identity / "aligned.parquet"
    if not src.is_file():
        raise StageFailed(f"{src} not found: run align@{identity} first")
    missing = missing_columns(src, ALIGNED_SCHEMA)
    if missing:
        raise StageFailed(f"{src} lacks column(s) {', '.join(missing)}: rerun align@{identity}")
    try:
        profile = load_profile(PROFILE_DIR / identity / "target.json")
    except ValueError as exc:
        raise StageFailed(str(exc)) from None
    grid = pose_light_grid(p.yaw_bins, p.pitch_bins, p.light_bins, p.light_dir_bins)
    source = pq.ParquetFile(src)
    out = fresh_dir(Path("data/dedupe") / identity)
    rejected = Rejections(out, STAGE)

    scan = scan_faces(source, rejected.add)
    if not scan.ids:
        rejected.close()
        raise StageFailed(f"no decodable face in {src} ({scan.faces_in} rows)")
    scan, outliers = drop_identity_outliers(source, scan, p.identity_outlier, rejected)
    if not scan.ids:
        rejected.close()
        raise StageFailed(f"every face of {src} is an identity outlier (see {rejected.path})")
    table = scan.table()
    selection = Path("data/trim") / identity / "selection.parquet"
    shot_map = shot_of_clip(selection)
    shots = [shot_map.get(c, c) for c in scan.clips] if shot_map is not None else scan.clips
    # the target's regions each face covers: a shot that alone covers one stays in training
    needs = target_regions(profile, grid, table) if p.target_weight > 0 else None
    choice = choose(scan, table, shots, p, params.base.seed, cell_weights(profile, grid, p.target_weight), needs)
    result, held = choice.result, choice.held
    for item, reason, message in reasons(scan, table, choice, p):
        rejected.add(item, reason, message)
    if result.selected.size == 0:
        rejected.close()
        raise StageFailed(f"no face kept of {scan.faces_in}: {result.count('blurry')} blurry, "
                          f"{result.count('near_duplicate')} near-duplicates, {result.count('near_holdout')} "
                          f"near-copies of held-out faces (see {rejected.path})")

    with atomic_path(out / "dataset.parquet") as tmp, atomic_path(out / "holdout.parquet") as hold_tmp:
        sheet = write_split(source, scan, result, tmp, hold_tmp, SHEET_MAX)

    kept = result.selected
    before = {c: table[c].to_numpy() if c in table else np.full(len(table), np.nan)
              for c in ("yaw", "pitch", "luminance", "asymmetry")}
    after = {c: v[kept] for c, v in before.items()}
    counts = {
        "faces_in": scan.faces_in,
        "undecodable": scan.faces_in - len(scan.ids) - outliers,
        "identity_outliers": outliers,
        "blurry": result.count("blurry"),
        "duplicates": result.count("near_duplicate"),
        "near_holdout": result.count("near_holdout"),
        "over_budget": result.count("over_budget"),
        "kept": int(kept.size),
        "faces_holdout": int(result.holdout_selected.size),
    }
    held_shots = sorted({shots[i] for i in np.flatnonzero(held)})
    dedupe_figure(out / "report.png", result.grid, before, after, [sheet[k] for k in sorted(sheet)],
                  counts, sheet_max=SHEET_MAX)
    cov_in = summary(result.cells, result.grid)
    cov = summary(result.cells[kept], result.grid)
    target = gap_report(profile, result.grid, after, before, identity=identity, stage=STAGE,
                        target_weight=p.target_weight, before="before dedupe", min_faces=p.target_gap_faces)
    atomic_write_json(out / "target_gaps.json", target)
    write_metrics(out, {
        **counts,
        "shots": len(set(shots)),
        "shots_holdout": len(held_shots),
        "clips_holdout": len({scan.clips[i] for i in np.flatnonzero(held)}),
        "no_holdout": not held_shots,
        "bins_covered": cov["cells_covered"],
        "bins_total": cov["cells_total"],
        "bins_covered_in": cov_in["cells_covered"],
        "entropy_bits": cov["entropy_bits"],
        "entropy_bits_in": cov_in["entropy_bits"],
        "evenness": cov["evenness"],
        **gap_metrics(target),
        "rejected": len(rejected),
    })  # fmt: skip
    rejected.close()
    unit = "shots" if shot_map is not None else f"clips (no usable {selection}: each clip counts as a shot)"
    print(f"dedupe@{identity}: kept {kept.size} of {scan.faces_in} faces ({outliers} identity outliers, "
          f"{counts['blurry']} blurry, "
          f"{counts['duplicates']} near-duplicates, {counts['near_holdout']} near-copies of held-out faces, "
          f"{counts['over_budget']} over budget), {cov['cells_covered']} of {cov['cells_total']} bins; "
          f"held out {counts['faces_holdout']} faces of {len(held_shots)} of {len(set(shots))} {unit}", flush=True)
    head, *gap_lines = log_lines(target, f"dedupe@{identity}", "before dedupe")
    print(head, flush=True)
    for line in gap_lines:
        print(line, file=sys.stderr, flush=True)
    if not held_shots:
        why = ("dedupe.holdout is 0" if p.holdout == 0 else "every training face nearly copies a face of the "
               "held-out shots" if choice.inseparable else f"only one shot ({shots[0]})")
        print(f"dedupe@{identity}: warning: no held-out set ({why}): training will score its checkpoints on "
              "training faces (holdout_is_train), which measures memorisation, not quality",
              file=sys.stderr, flush=True)


def drop_identity_outliers(source: pq.ParquetFile, scan: FaceScan, threshold: float,
                           rejected: Rejections) -> tuple[FaceScan, int]:  # fmt: skip
    """The scan without the faces far from the identity's mean face (module doc), and their count."""
    if threshold <= -1:
        return scan, 0
    check = identity_check(source, scan, threshold, Embedder())
    for i in np.flatnonzero(check.outlier):
        rejected.add(scan.ids[i], "identity_outlier",
                     f"SFace cosine {check.similarity[i]:.3f} to the identity's mean face, below "
                     f"dedupe.identity_outlier {threshold:g}: someone else, or not a face")  # fmt: skip
    return drop_faces(scan, check.outlier), int(check.outlier.sum())


if __name__ == "__main__":
    identity_main(STAGE, run)
