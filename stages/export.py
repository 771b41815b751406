"""export: ground truth for detector research and patches for compositing (optional, `export.enabled`).

    python -m stages.export [--params params.yaml]

Off by default: then `data/export/index.json` only says so (`"enabled": false`), so the DAG
stays whole and DVC caches the no-op. On, it first checks the same consent records convert
does (facedag.provenance.consent.require_consent: `convert.swap_to` and the target), then reads
the target (`target.uri`), `data/convert/frames.mkv` and `frames.parquet` and render's
`data/render/output.json` (for the mark id and the provenance it traces back to), and writes
under `data/export/` (facedag.swap.export; each file atomically):

- `original_sequences/facedag/raw/images/<video>/NNNN.png`: the real target frames;
- `manipulated_sequences/facedag/raw/images/<video>/NNNN.png`: the swapped frames, with render's
  invisible mark (its mark id), no visible label;
- `manipulated_sequences/facedag/masks/images/<video>/NNNN.png`: convert's blend alpha, full frame;
- `manipulated_sequences/facedag/patches/<video>/NNNN.png` + `transforms.json` (`export.patches`):
  the swapped face as an RGBA patch and where it goes in the plate;
- `index.json` (last: the export is whole when it exists): per video the target (uri, sha256,
  licence), identities, model (sha256, step), the provenance record and its sha256, the mark id,
  frames, fps, which frames had a swap, consent and licence references; `label: false` and why;
- `rejected.jsonl`: frames that could not be exported (reasons frame_missing, frame_mismatch,
  mask_unreadable, too_small_to_mark), the rest goes on;
- `metrics.json`: frames, exported, swapped, patches, rejected.

`<video>` is `export.name`, else the target file's stem. Fails with one line when consent is
missing, an input is absent, output.json is for another target, or no frame could be exported.
"""

from __future__ import annotations

import json
from pathlib import Path

from facedag.params import Params
from facedag.provenance.consent import require_consent
from facedag.records import Rejected, Rejections, StageFailed, atomic_write_json, sha256_file, write_metrics
from facedag.stagekit import fresh_dir, stage_main
from facedag.swap.export import export_video, frame_size_and_rate, index_document, off_record, video_entry

STAGE = "export"
CONVERT = Path("data") / "convert"
RECORD = Path("data") / "render" / "output.json"
OUT = Path("data") / STAGE


def run(params: Params) -> None:
    cfg = params.export
    if not cfg.enabled:
        out = fresh_dir(OUT)
        atomic_write_json(out / "index.json", off_record())
        print(f"[{STAGE}] off (export.enabled: false): {out / 'index.json'} says so", flush=True)
        return
    require_consent(params, [params.convert.swap_to], target=True)
    frames, table = CONVERT / "frames.mkv", CONVERT / "frames.parquet"
    for path, before in ((frames, "convert"), (table, "convert"), (RECORD, "render")):
        if not path.is_file():
            raise StageFailed(f"{path} not found: run {before} first")
    target = Path(params.target.uri)
    if not target.is_file():
        raise StageFailed(f"target {target} not found")
    try:
        record = json.loads(RECORD.read_text())
    except ValueError as exc:
        raise StageFailed(f"{RECORD} is not JSON: {exc}") from None
    target_sha = sha256_file(target)
    if (record.get("target") or {}).get("sha256") != target_sha:
        raise StageFailed(f"{RECORD} is for another target than {target} (sha256 {target_sha}): render again")
    video = cfg.name or target.stem
    out = fresh_dir(OUT)
    rejections = Rejections(out, STAGE)
    try:
        width, height, rate = frame_size_and_rate(frames)
        stats = export_video(target, frames, table, record, out, cfg, video, rejections)
    except Rejected as exc:
        raise StageFailed(f"{exc.reason}: {exc.message}") from None
    finally:
        rejections.close()
    if stats.exported == 0:
        raise StageFailed(f"no frame of {frames} could be exported ({stats.rejected} rejected: see "
                          f"{rejections.path})")  # fmt: skip
    entry = video_entry(record, str(RECORD), sha256_file(RECORD), video, stats, width, height, rate, cfg, out)
    write_metrics(out, stats.metrics())
    atomic_write_json(out / "index.json", index_document({video: entry}))
    print(f"[{STAGE}] {stats.exported} frames of {video} ({len(stats.swapped)} swapped, {stats.patches} patches, "
          f"{stats.rejected} rejected), mark {entry['mark_id']}: {out / 'index.json'}", flush=True)


if __name__ == "__main__":
    stage_main(STAGE, run)
