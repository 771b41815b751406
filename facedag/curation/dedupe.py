"""dedupe@ID over align's table: which faces train, which are held out, and why the rest are dropped.

Three passes over aligned.parquet, each streaming it in record batches:
1. `scan_faces`: per decodable face, a 64-bit pHash, a 16x16 thumbnail and the feature
   columns (images are decoded one batch at a time and not kept);
2. `choose`: held-out shots first (facedag.curation.curate.holdout_mask), then
   facedag.curation.curate.curate (blur, near-copies of held-out faces, near-duplicates,
   the balanced budget); when every training face nearly copies a held-out one, no honest
   split exists and nothing is held out;
3. `write_split`: the kept rows with every aligned column plus bin, bin_label, phash and rank,
   to dataset.parquet (training) or holdout.parquet.

In order: held-out shots first (about dedupe.holdout of the faces, whole shots, chosen by
base.seed; a shot is a scene trim detected, so the segments trim cut from one long shot stay on
one side; without trim's selection.parquet each clip is a shot), then the blur filter, near-
copies of held-out faces out of training, near-duplicates (pHash AND feature distance, the
sharper of a pair stays), balance across yaw x pitch x luminance x lighting-direction bins
toward dedupe.max_faces (held-out: dedupe.holdout_max_faces), sharpest first within a bin, round
robin across bins. With a single shot nothing can be held out honestly, nor when every training
face nearly copies a held-out one (the same picture in every shot): `no_holdout` is true, a
warning says why, and training evaluates on training faces (`holdout_is_train`).

`reasons` turns the choice into the stage's rejected.jsonl lines (reason codes in stages/dedupe.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from facedag.curation.curate import THUMB, CurateResult, curate, hash_to_hex, holdout_mask, signature
from facedag.params import Dedupe
from facedag.tables import decode_image

READ_BATCH = 256
FEATURES = ["yaw", "pitch", "roll", "mouth_open", "eyes_open", "luminance", "asymmetry", "sharpness"]
Reject = Callable[[str, str, str], None]


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


@dataclass
class FaceScan:
    """What pass 1 keeps of every decodable face (parallel lists, in table order)."""

    ids: list[str] = field(default_factory=list)
    clips: list[str] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)  # row number in aligned.parquet
    hashes: list[int] = field(default_factory=list)
    thumbs: list[np.ndarray] = field(default_factory=list)
    features: dict[str, list[float]] = field(default_factory=lambda: {c: [] for c in FEATURES})
    faces_in: int = 0  # rows read, decodable or not

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.features)


def scan_faces(source: pq.ParquetFile, reject: Reject) -> FaceScan:
    """Pass 1: hashes, thumbnails and features; undecodable images go to `reject`."""
    scan = FaceScan()
    for batch in source.iter_batches(batch_size=READ_BATCH, columns=["face", "clip", "image", *FEATURES]):
        cols = batch.to_pydict()
        for k in range(batch.num_rows):
            row = scan.faces_in
            scan.faces_in += 1
            face_id = str(cols["face"][k])
            image = decode_image(cols["image"][k] or b"")
            if image is None:
                reject(face_id, "undecodable_image", "the aligned image does not decode")
                continue
            h, t = signature(image)
            scan.ids.append(face_id)
            scan.clips.append(str(cols["clip"][k]))
            scan.rows.append(row)
            scan.hashes.append(h)
            scan.thumbs.append(t)
            for c in FEATURES:
                v = cols[c][k]
                scan.features[c].append(np.nan if v is None else float(v))
    return scan


@dataclass
class Choice:
    """Pass 2's verdict: curate's result, which faces sit in held-out shots, and why no split
    was possible (`inseparable`: every training face nearly copies a held-out one)."""

    result: CurateResult
    held: np.ndarray  # bool per scanned face
    shots: list[str]  # the shot of each scanned face
    inseparable: bool


def choose(scan: FaceScan, table: pd.DataFrame, shots: list[str], p: Dedupe, seed: int,
           weights: np.ndarray | None, needs: np.ndarray | None) -> Choice:
    """Pass 2: hold out whole shots (never the last one covering a target region in `needs`),
    then curate the rest toward `weights` (per cell, or None)."""
    hashes = np.array(scan.hashes, dtype=np.uint64)
    thumbs = np.stack(scan.thumbs).reshape(len(scan.ids), THUMB * THUMB)

    def run(held_out: np.ndarray) -> CurateResult:
        return curate(
            table, hashes, thumbs, min_sharpness=p.min_sharpness, min_sharpness_rel=p.min_sharpness_rel,
            phash_distance=p.phash_distance, feature_distance=p.feature_distance, max_faces=p.max_faces,
            yaw_bins=p.yaw_bins, pitch_bins=p.pitch_bins, light_bins=p.light_bins, light_dir_bins=p.light_dir_bins,
            held_out=held_out, holdout_max_faces=p.holdout_max_faces, cell_weights=weights,
        )  # fmt: skip

    held = holdout_mask(shots, p.holdout, seed, needs)
    result = run(held)
    inseparable = result.selected.size == 0 and result.count("near_holdout") > 0
    if inseparable:
        held = np.zeros_like(held)
        result = run(held)
    return Choice(result, held, shots, inseparable)


def reasons(scan: FaceScan, table: pd.DataFrame, choice: Choice, p: Dedupe) -> Iterator[tuple[str, str, str]]:
    """(face, reason code, message) for every face curate dropped; held-out faces say so."""
    result, held, ids = choice.result, choice.held, scan.ids
    sharp = table["sharpness"].to_numpy()
    for i, status in enumerate(result.status):
        side = " (held-out set)" if held[i] else ""
        if status == "blurry":
            yield ids[i], "blurry", (f"sharpness {sharp[i]:.1f} below the limit (min_sharpness {p.min_sharpness:g}, "
                                     f"min_sharpness_rel {p.min_sharpness_rel:g}){side}")
        elif status == "near_duplicate":
            j = result.duplicate_of[i]
            yield ids[i], "near_duplicate", (f"duplicates {ids[j]} (phash distance {result.dup_hamming[i]}, "
                                             f"feature distance {result.dup_distance[i]:.3f}), which is sharper{side}")
        elif status == "near_holdout":
            j = result.duplicate_of[i]
            yield ids[i], "near_holdout", (f"nearly copies {ids[j]} of held-out clip {scan.clips[j]} (phash "
                                           f"distance {result.dup_hamming[i]}, feature distance "
                                           f"{result.dup_distance[i]:.3f}): training on it would leak the held-out set")
        elif status == "over_budget":
            budget = f"holdout_max_faces {p.holdout_max_faces}" if held[i] else f"max_faces {p.max_faces}"
            yield ids[i], "over_budget", (f"bin {result.grid.label(int(result.cells[i]))} already has sharper faces "
                                          f"within {budget}{side}")


def output_schema(source: pa.Schema) -> pa.Schema:
    """aligned.parquet's schema with dedupe's columns (replacing any of the same name)."""
    schema = source
    for name, typ in (("bin", pa.int32()), ("bin_label", pa.string()), ("phash", pa.string()), ("rank", pa.int32())):
        if name in schema.names:
            schema = schema.remove(schema.get_field_index(name))
        schema = schema.append(pa.field(name, typ))
    return schema


def write_split(source: pq.ParquetFile, scan: FaceScan, result: CurateResult, dataset: Path, holdout: Path,
                sheet_max: int) -> dict[int, np.ndarray]:
    """Pass 3: the kept rows to `dataset` (training) and `holdout`; returns the first `sheet_max`
    training faces by rank (for the contact sheet)."""
    rank = {scan.rows[i]: r + 1 for r, i in enumerate(result.selected.tolist())}
    hold_rank = {scan.rows[i]: r + 1 for r, i in enumerate(result.holdout_selected.tolist())}
    local = {scan.rows[i]: i for i in range(len(scan.rows))}
    schema = output_schema(source.schema_arrow)

    def kept_rows(batch: pa.RecordBatch, take: list[int], start: int, ranks: dict[int, int]) -> pa.Table:
        """Rows `take` of a batch (starting at table row `start`) with dedupe's columns added."""
        part = batch.take(pa.array(take, type=pa.int64()))
        idx = [local[start + k] for k in take]
        data = {n: part.column(n) for n in source.schema_arrow.names}
        data["bin"] = pa.array([int(result.cells[i]) for i in idx], pa.int32())
        data["bin_label"] = pa.array([result.grid.label(int(result.cells[i])) for i in idx], pa.string())
        data["phash"] = pa.array([hash_to_hex(int(scan.hashes[i])) for i in idx], pa.string())
        data["rank"] = pa.array([ranks[start + k] for k in take], pa.int32())
        return pa.table({n: data[n] for n in schema.names}, schema=schema)

    sheet: dict[int, np.ndarray] = {}
    row = 0
    writer = pq.ParquetWriter(dataset, schema, compression="zstd")
    hold_writer = pq.ParquetWriter(holdout, schema, compression="zstd")
    try:
        for batch in source.iter_batches(batch_size=READ_BATCH):
            take = [k for k in range(batch.num_rows) if row + k in rank]
            if take:
                part = kept_rows(batch, take, row, rank)
                writer.write_table(part)
                for r, blob in zip(part.column("rank").to_pylist(), part.column("image").to_pylist(), strict=True):
                    if r <= sheet_max and (img := decode_image(blob)) is not None:
                        sheet[r] = img
            hold_take = [k for k in range(batch.num_rows) if row + k in hold_rank]
            if hold_take:
                hold_writer.write_table(kept_rows(batch, hold_take, row, hold_rank))
            row += batch.num_rows
    finally:
        writer.close()
        hold_writer.close()
    return sheet
