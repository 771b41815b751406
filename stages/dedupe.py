"""dedupe@ID: a clean, varied training set from the aligned faces, and a held-out set beside it.

    python -m stages.dedupe ID [--params params.yaml]

Reads  data/align/ID/aligned.parquet (stages/align.py's table), in record batches,
       data/trim/ID/selection.parquet (which detected shot each clip was cut from), and
       data/profile/ID/target.json when there is one (profile@ID: the target's faces)
Writes data/dedupe/ID/
         dataset.parquet   the training faces: every aligned column (image bytes included) plus
                           bin (int32, cell of facedag.coverage.pose_light_grid),
                           bin_label (string), phash (16 hex digits), rank (int32,
                           selection order, 1 = first)
         holdout.parquet   the held-out faces, same columns (rank within the held-out set);
                           no row when nothing could be held out. Training never sees them:
                           it scores its checkpoints on them (facedag.training)
         report.png        pose scatter before/after, lighting histogram, bin occupancy,
                           contact sheet of kept faces (facedag.report.dedupe_figure)
         target_gaps.json  the target's poses and lighting against the training faces
                           (facedag.target_profile.gap_report)
         metrics.json      faces_in, undecodable, blurry, duplicates, near_holdout, over_budget,
                           kept, faces_holdout, shots, shots_holdout, clips_holdout, no_holdout,
                           bins_covered, bins_total, entropy_bits (kept), entropy_bits_in
                           (all decodable faces), evenness, and the target_* figures
                           (facedag.target_profile.gap_metrics)
         rejected.jsonl    one line per dropped face (item = the face id)

Steps (facedag.curate): held-out shots first (about dedupe.holdout of the faces, whole shots,
chosen by base.seed; a shot is a scene trim detected, so the segments trim cut from one long
shot stay on one side; without trim's selection.parquet each clip is a shot), then the blur
filter, near-copies of held-out faces out of training, near-duplicates (pHash AND feature
distance, the sharper of a pair stays), balance across yaw x pitch x luminance x
lighting-direction bins toward dedupe.max_faces (held-out: dedupe.holdout_max_faces), sharpest
first within a bin, round robin across bins. With a single shot nothing can be held out
honestly, nor when every training face nearly copies a held-out one (the same picture in every
shot): `no_holdout` is true, a warning says why, and training evaluates on training faces
(`holdout_is_train`).

Toward the target: when ID is the identity convert paints into the target (its profile
applies) and `dedupe.target_weight` > 0, the training side's round robin is weighted toward the
bins of the target's poses and lighting (facedag.target_profile.cell_weights, facedag.curate.
balance); the held-out side is not, and no shot is held out while it is the last with faces in
a pose or lighting region the target shows (facedag.target_profile.target_regions, facedag.
curate.holdout_mask). Whatever the weight, the training faces are compared with
the target: coverage figures in metrics.json, and one log line and one entry of
target_gaps.json per region that holds >= 5 % of the target's frames and fewer than
`dedupe.target_gap_faces` training faces ("... src has 2 faces there (9 before dedupe)").

Reason codes: `blurry`, `near_duplicate` (message names the kept face), `near_holdout` (a
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
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from facedag.coverage import pose_light_grid, summary
from facedag.curate import THUMB, CurateResult, curate, hash_to_hex, holdout_mask, signature
from facedag.params import Params
from facedag.records import Rejections, StageFailed, atomic_path, atomic_write_json, write_metrics
from facedag.report import dedupe_figure
from facedag.stagekit import fresh_dir, identity_main
from facedag.tables import ALIGNED_SCHEMA, decode_image, missing_columns
from facedag.target_profile import cell_weights, gap_metrics, gap_report, load_profile, log_lines, target_regions

STAGE = "dedupe"
READ_BATCH = 256
FEATURES = ["yaw", "pitch", "roll", "mouth_open", "eyes_open", "luminance", "asymmetry", "sharpness"]
SHEET_MAX = 60
PROFILE_DIR = Path("data/profile")
# until params.Dedupe has them (0 weight = unweighted; gap: fewer training faces than this)
DEFAULT_TARGET_WEIGHT = 1.0
DEFAULT_TARGET_GAP_FACES = 10


def shot_of_clip(selection: Path) -> dict[str, str] | None:
    """{clip file name: its shot} from trim's selection.parquet, or None when there is none.

    A shot is (source clip sha256, detected scene): trim cuts a shot longer than
    trim.max_shot_seconds into segments, whose neighbouring frames are near-identical.
    """
    if not selection.is_file():
        return None
    cols = ["clip", "sha256", "scene"]
    if set(cols) - set(pq.ParquetFile(selection).schema_arrow.names):
        return None
    rows = pq.read_table(selection, columns=cols).to_pylist()
    return {r["clip"]: f"{r['sha256']}#{r['scene']}" for r in rows if r["clip"]}


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
    target_weight = float(getattr(p, "target_weight", DEFAULT_TARGET_WEIGHT))
    grid = pose_light_grid(p.yaw_bins, p.pitch_bins, p.light_bins, p.light_dir_bins)
    weights = cell_weights(profile, grid, target_weight)
    source = pq.ParquetFile(src)
    out = fresh_dir(Path("data/dedupe") / identity)
    rejected = Rejections(out, STAGE)

    # pass 1: features, hashes and thumbnails of every decodable face
    ids: list[str] = []
    feats: dict[str, list[float]] = {c: [] for c in FEATURES}
    hashes: list[int] = []
    thumbs: list[np.ndarray] = []
    clips: list[str] = []
    rows: list[int] = []  # row number in aligned.parquet of each decodable face
    faces_in = 0
    for batch in source.iter_batches(batch_size=READ_BATCH, columns=["face", "clip", "image", *FEATURES]):
        cols = batch.to_pydict()
        for k in range(batch.num_rows):
            row = faces_in
            faces_in += 1
            face_id = str(cols["face"][k])
            image = decode_image(cols["image"][k] or b"")
            if image is None:
                rejected.add(face_id, "undecodable_image", "the aligned image does not decode")
                continue
            h, t = signature(image)
            ids.append(face_id)
            clips.append(str(cols["clip"][k]))
            rows.append(row)
            hashes.append(h)
            thumbs.append(t)
            for c in FEATURES:
                v = cols[c][k]
                feats[c].append(np.nan if v is None else float(v))
    if not ids:
        rejected.close()
        raise StageFailed(f"no decodable face in {src} ({faces_in} rows)")
    table = pd.DataFrame(feats)

    # the held-out shots, chosen before anything else so that no near-copy of theirs is trained on
    selection = Path("data/trim") / identity / "selection.parquet"
    shot_map = shot_of_clip(selection)
    shots = [shot_map.get(c, c) for c in clips] if shot_map is not None else clips
    fraction = p.holdout
    cap = p.holdout_max_faces
    # the target's regions each face covers: a shot that alone covers one stays in training
    needs = target_regions(profile, grid, table) if target_weight > 0 else None
    held = holdout_mask(shots, fraction, params.base.seed, needs)

    def run_curate(held_out: np.ndarray) -> CurateResult:
        return curate(
            table, np.array(hashes, dtype=np.uint64), np.stack(thumbs).reshape(len(ids), THUMB * THUMB),
            min_sharpness=p.min_sharpness, min_sharpness_rel=p.min_sharpness_rel,
            phash_distance=p.phash_distance, feature_distance=p.feature_distance, max_faces=p.max_faces,
            yaw_bins=p.yaw_bins, pitch_bins=p.pitch_bins, light_bins=p.light_bins, light_dir_bins=p.light_dir_bins,
            held_out=held_out, holdout_max_faces=cap, cell_weights=weights,
        )

    result = run_curate(held)
    inseparable = result.selected.size == 0 and result.count("near_holdout") > 0
    if inseparable:  # every usable training face nearly copies a held-out one: no honest split exists
        held = np.zeros_like(held)
        result = run_curate(held)
    sharp = table["sharpness"].to_numpy()
    for i, status in enumerate(result.status):
        side = " (held-out set)" if held[i] else ""
        if status == "blurry":
            rejected.add(ids[i], "blurry", f"sharpness {sharp[i]:.1f} below the limit (min_sharpness "
                         f"{p.min_sharpness:g}, min_sharpness_rel {p.min_sharpness_rel:g}){side}")
        elif status == "near_duplicate":
            j = result.duplicate_of[i]
            rejected.add(ids[i], "near_duplicate", f"duplicates {ids[j]} (phash distance {result.dup_hamming[i]}, "
                         f"feature distance {result.dup_distance[i]:.3f}), which is sharper{side}")
        elif status == "near_holdout":
            j = result.duplicate_of[i]
            rejected.add(ids[i], "near_holdout", f"nearly copies {ids[j]} of held-out clip {clips[j]} (phash "
                         f"distance {result.dup_hamming[i]}, feature distance {result.dup_distance[i]:.3f}): "
                         "training on it would leak the held-out set")
        elif status == "over_budget":
            budget = f"holdout_max_faces {cap}" if held[i] else f"max_faces {p.max_faces}"
            rejected.add(ids[i], "over_budget", f"bin {result.grid.label(int(result.cells[i]))} already has "
                         f"sharper faces within {budget}{side}")
    if result.selected.size == 0:
        rejected.close()
        raise StageFailed(f"no face kept of {faces_in}: {result.count('blurry')} blurry, "
                          f"{result.count('near_duplicate')} near-duplicates, {result.count('near_holdout')} "
                          f"near-copies of held-out faces (see {rejected.path})")

    # pass 2: the kept rows with every aligned column, plus bin, phash and rank, to one file or the other
    rank = {rows[i]: r + 1 for r, i in enumerate(result.selected.tolist())}
    hold_rank = {rows[i]: r + 1 for r, i in enumerate(result.holdout_selected.tolist())}
    local = {rows[i]: i for i in range(len(rows))}
    schema = source.schema_arrow
    for name, typ in (("bin", pa.int32()), ("bin_label", pa.string()), ("phash", pa.string()), ("rank", pa.int32())):
        if name in schema.names:
            schema = schema.remove(schema.get_field_index(name))
        schema = schema.append(pa.field(name, typ))

    def kept_rows(batch: pa.RecordBatch, take: list[int], start: int, ranks: dict[int, int]) -> pa.Table:
        """Rows `take` of a batch (starting at table row `start`) with dedupe's columns added."""
        part = batch.take(pa.array(take, type=pa.int64()))
        idx = [local[start + k] for k in take]
        data = {n: part.column(n) for n in source.schema_arrow.names}
        data["bin"] = pa.array([int(result.cells[i]) for i in idx], pa.int32())
        data["bin_label"] = pa.array([result.grid.label(int(result.cells[i])) for i in idx], pa.string())
        data["phash"] = pa.array([hash_to_hex(int(hashes[i])) for i in idx], pa.string())
        data["rank"] = pa.array([ranks[start + k] for k in take], pa.int32())
        return pa.table({n: data[n] for n in schema.names}, schema=schema)

    sheet: dict[int, np.ndarray] = {}
    row = 0
    with atomic_path(out / "dataset.parquet") as tmp, atomic_path(out / "holdout.parquet") as hold_tmp:
        writer = pq.ParquetWriter(tmp, schema, compression="zstd")
        hold_writer = pq.ParquetWriter(hold_tmp, schema, compression="zstd")
        try:
            for batch in source.iter_batches(batch_size=READ_BATCH):
                take = [k for k in range(batch.num_rows) if row + k in rank]
                if take:
                    part = kept_rows(batch, take, row, rank)
                    writer.write_table(part)
                    for r, blob in zip(part.column("rank").to_pylist(), part.column("image").to_pylist(),
                                       strict=True):
                        if r <= SHEET_MAX and (img := decode_image(blob)) is not None:
                            sheet[r] = img
                hold_take = [k for k in range(batch.num_rows) if row + k in hold_rank]
                if hold_take:
                    hold_writer.write_table(kept_rows(batch, hold_take, row, hold_rank))
                row += batch.num_rows
        finally:
            writer.close()
            hold_writer.close()

    kept = result.selected
    before = {c: table[c].to_numpy() if c in table else np.full(len(table), np.nan)
              for c in ("yaw", "pitch", "luminance", "asymmetry")}
    after = {c: v[kept] for c, v in before.items()}
    counts = {
        "faces_in": faces_in,
        "undecodable": faces_in - len(ids),
        "blurry": result.count("blurry"),
        "duplicates": result.count("near_duplicate"),
        "near_holdout": result.count("near_holdout"),
        "over_budget": result.count("over_budget"),
        "kept": int(kept.size),
        "faces_holdout": int(result.holdout_selected.size),
    }
    held_shots = sorted({shots[i] for i in np.flatnonzero(held)})
    no_holdout = not held_shots
    dedupe_figure(out / "report.png", result.grid, before, after, [sheet[k] for k in sorted(sheet)],
                  counts, sheet_max=SHEET_MAX)
    cov_in = summary(result.cells, result.grid)
    cov = summary(result.cells[kept], result.grid)
    target = gap_report(profile, result.grid, after, before, identity=identity, stage=STAGE,
                        target_weight=target_weight, before="before dedupe",
                        min_faces=int(getattr(p, "target_gap_faces", DEFAULT_TARGET_GAP_FACES)))
    atomic_write_json(out / "target_gaps.json", target)
    write_metrics(out, {
        **counts,
        "shots": len(set(shots)),
        "shots_holdout": len(held_shots),
        "clips_holdout": len({clips[i] for i in np.flatnonzero(held)}),
        "no_holdout": no_holdout,
        "bins_covered": cov["cells_covered"],
        "bins_total": cov["cells_total"],
        "bins_covered_in": cov_in["cells_covered"],
        "entropy_bits": cov["entropy_bits"],
        "entropy_bits_in": cov_in["entropy_bits"],
        "evenness": cov["evenness"],
        **gap_metrics(target),
        "rejected": len(rejected),
    })
    rejected.close()
    unit = "shots" if shot_map is not None else f"clips (no usable {selection}: each clip counts as a shot)"
    print(f"dedupe@{identity}: kept {kept.size} of {faces_in} faces ({counts['blurry']} blurry, "
          f"{counts['duplicates']} near-duplicates, {counts['near_holdout']} near-copies of held-out faces, "
          f"{counts['over_budget']} over budget), {cov['cells_covered']} of {cov['cells_total']} bins; "
          f"held out {counts['faces_holdout']} faces of {len(held_shots)} of {len(set(shots))} {unit}", flush=True)
    head, *gap_lines = log_lines(target, f"dedupe@{identity}", "before dedupe")
    print(head, flush=True)
    for line in gap_lines:
        print(line, file=sys.stderr, flush=True)
    if no_holdout:
        why = ("dedupe.holdout is 0" if fraction == 0 else "every training face nearly copies a face of the "
               "held-out shots" if inseparable else f"only one shot ({shots[0]})")
        print(f"dedupe@{identity}: warning: no held-out set ({why}): training will score its checkpoints on "
              "training faces (holdout_is_train), which measures memorisation, not quality",
              file=sys.stderr, flush=True)


if __name__ == "__main__":
    identity_main(STAGE, run)
