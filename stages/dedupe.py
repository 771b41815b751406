"""dedupe@ID: a clean, varied training set from the aligned faces.

    python -m stages.dedupe ID [--params params.yaml]

Reads  data/align/ID/aligned.parquet (stages/align.py's table), in record batches
Writes data/dedupe/ID/
         dataset.parquet   the kept faces: every aligned column (image bytes included) plus
                           bin (int32, cell of facedag.coverage.pose_light_grid),
                           bin_label (string), phash (16 hex digits), rank (int32,
                           selection order, 1 = first)
         report.png        pose scatter before/after, lighting histogram, bin occupancy,
                           contact sheet of kept faces (facedag.report.dedupe_figure)
         metrics.json      faces_in, undecodable, blurry, duplicates, over_budget, kept,
                           bins_covered, bins_total, entropy_bits (kept), entropy_bits_in
                           (all decodable faces), evenness
         rejected.jsonl    one line per dropped face (item = the face id)

Steps (facedag.curate): blur filter, near-duplicates (pHash AND feature distance, the
sharper of a pair stays), balance across yaw x pitch x luminance x lighting-direction bins
toward dedupe.max_faces (sharpest first within a bin, round robin across bins).

Reason codes: `blurry`, `near_duplicate` (message names the kept face), `over_budget`
(a valid face that the balanced budget left out), `undecodable_image` (image bytes that do
not decode). Fails with one line when no face is kept.

Memory: images are decoded one batch at a time; only a 64-bit hash, a 16x16 thumbnail and
the feature columns stay per face. A second pass over the table writes the kept rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from facedag.coverage import summary
from facedag.curate import THUMB, curate, hash_to_hex, signature
from facedag.params import Params
from facedag.records import Rejections, StageFailed, atomic_path, write_metrics
from facedag.report import dedupe_figure
from facedag.stagekit import fresh_dir, identity_main
from facedag.tables import ALIGNED_SCHEMA, decode_image, missing_columns

STAGE = "dedupe"
READ_BATCH = 256
FEATURES = ["yaw", "pitch", "roll", "mouth_open", "eyes_open", "luminance", "asymmetry", "sharpness"]
SHEET_MAX = 60


def run(params: Params, identity: str) -> None:
    p = params.dedupe
    src = Path("data/align") / identity / "aligned.parquet"
    if not src.is_file():
        raise StageFailed(f"{src} not found: run align@{identity} first")
    missing = missing_columns(src, ALIGNED_SCHEMA)
    if missing:
        raise StageFailed(f"{src} lacks column(s) {', '.join(missing)}: rerun align@{identity}")
    source = pq.ParquetFile(src)
    out = fresh_dir(Path("data/dedupe") / identity)
    rejected = Rejections(out, STAGE)

    # pass 1: features, hashes and thumbnails of every decodable face
    ids: list[str] = []
    feats: dict[str, list[float]] = {c: [] for c in FEATURES}
    hashes: list[int] = []
    thumbs: list[np.ndarray] = []
    rows: list[int] = []  # row number in aligned.parquet of each decodable face
    faces_in = 0
    for batch in source.iter_batches(batch_size=READ_BATCH, columns=["face", "image", *FEATURES]):
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

    result = curate(
        table, np.array(hashes, dtype=np.uint64), np.stack(thumbs).reshape(len(ids), THUMB * THUMB),
        min_sharpness=p.min_sharpness, min_sharpness_rel=p.min_sharpness_rel,
        phash_distance=p.phash_distance, feature_distance=p.feature_distance, max_faces=p.max_faces,
        yaw_bins=p.yaw_bins, pitch_bins=p.pitch_bins, light_bins=p.light_bins, light_dir_bins=p.light_dir_bins,
    )
    sharp = table["sharpness"].to_numpy()
    for i, status in enumerate(result.status):
        if status == "blurry":
            rejected.add(ids[i], "blurry", f"sharpness {sharp[i]:.1f} below the limit (min_sharpness "
                         f"{p.min_sharpness:g}, min_sharpness_rel {p.min_sharpness_rel:g})")
        elif status == "near_duplicate":
            j = result.duplicate_of[i]
            rejected.add(ids[i], "near_duplicate", f"duplicates {ids[j]} (phash distance {result.dup_hamming[i]}, "
                         f"feature distance {result.dup_distance[i]:.3f}), which is sharper")
        elif status == "over_budget":
            rejected.add(ids[i], "over_budget", f"bin {result.grid.label(int(result.cells[i]))} already has "
                         f"sharper faces within max_faces {p.max_faces}")
    if result.selected.size == 0:
        rejected.close()
        raise StageFailed(f"no face kept of {faces_in}: {result.count('blurry')} blurry, "
                          f"{result.count('near_duplicate')} near-duplicates (see {rejected.path})")

    # pass 2: the kept rows with every aligned column, plus bin, phash and rank
    rank = {rows[i]: r + 1 for r, i in enumerate(result.selected.tolist())}
    local = {rows[i]: i for i in range(len(rows))}
    schema = source.schema_arrow
    for name, typ in (("bin", pa.int32()), ("bin_label", pa.string()), ("phash", pa.string()), ("rank", pa.int32())):
        if name in schema.names:
            schema = schema.remove(schema.get_field_index(name))
        schema = schema.append(pa.field(name, typ))
    sheet: dict[int, np.ndarray] = {}
    row = 0
    with atomic_path(out / "dataset.parquet") as tmp:
        writer = pq.ParquetWriter(tmp, schema, compression="zstd")
        try:
            for batch in source.iter_batches(batch_size=READ_BATCH):
                take = [k for k in range(batch.num_rows) if row + k in rank]
                if take:
                    part = batch.take(pa.array(take, type=pa.int64()))
                    idx = [local[row + k] for k in take]
                    data = {n: part.column(n) for n in source.schema_arrow.names}
                    data["bin"] = pa.array([int(result.cells[i]) for i in idx], pa.int32())
                    data["bin_label"] = pa.array([result.grid.label(int(result.cells[i])) for i in idx], pa.string())
                    data["phash"] = pa.array([hash_to_hex(int(hashes[i])) for i in idx], pa.string())
                    data["rank"] = pa.array([rank[row + k] for k in take], pa.int32())
                    writer.write_table(pa.table({n: data[n] for n in schema.names}, schema=schema))
                    images = part.column("image").to_pylist()
                    for k, blob in zip(take, images, strict=True):
                        if rank[row + k] <= SHEET_MAX:
                            img = decode_image(blob)
                            if img is not None:
                                sheet[rank[row + k]] = img
                row += batch.num_rows
        finally:
            writer.close()

    kept = result.selected
    before = {c: table[c].to_numpy() if c in table else np.full(len(table), np.nan)
              for c in ("yaw", "pitch", "luminance", "asymmetry")}
    after = {c: v[kept] for c, v in before.items()}
    counts = {
        "faces_in": faces_in,
        "undecodable": faces_in - len(ids),
        "blurry": result.count("blurry"),
        "duplicates": result.count("near_duplicate"),
        "over_budget": result.count("over_budget"),
        "kept": int(kept.size),
    }
    dedupe_figure(out / "report.png", result.grid, before, after, [sheet[k] for k in sorted(sheet)],
                  counts, sheet_max=SHEET_MAX)
    cov_in = summary(result.cells, result.grid)
    cov = summary(result.cells[kept], result.grid)
    write_metrics(out, {
        **counts,
        "bins_covered": cov["cells_covered"],
        "bins_total": cov["cells_total"],
        "bins_covered_in": cov_in["cells_covered"],
        "entropy_bits": cov["entropy_bits"],
        "entropy_bits_in": cov_in["entropy_bits"],
        "evenness": cov["evenness"],
        "rejected": len(rejected),
    })
    rejected.close()
    print(f"dedupe@{identity}: kept {kept.size} of {faces_in} faces ({counts['blurry']} blurry, "
          f"{counts['duplicates']} near-duplicates, {counts['over_budget']} over budget), "
          f"{cov['cells_covered']} of {cov['cells_total']} bins", flush=True)


if __name__ == "__main__":
    identity_main(STAGE, run)
