"""render: the labelled, tagged H.264 video and its provenance record.

    python -m stages.render [--params params.yaml]

Reads `data/convert/frames.mkv`, the target (`target.uri`, for its audio and its sha256),
`models/model.safetensors` and `models/model.json` (their hash and config), and
`data/download/<ID>/manifest.parquet` (the source clips' sha256). Writes, under
`data/render/` (each atomically):

- `output.mp4`: H.264 (render.crf, render.preset), the target's audio, the visible label
  unless `render.label: false`, and container tags saying it is synthetic and naming
  output.json (facedag.render);
- `output.json`: the provenance record (facedag.provenance);
- `metrics.json`: frames, label (0/1), audio (0/1), bytes.
"""

from __future__ import annotations

from pathlib import Path

from facedag.params import Params
from facedag.provenance import build_record
from facedag.records import Rejected, StageFailed, atomic_path, atomic_write_json, write_metrics
from facedag.render import render_video
from facedag.stagekit import fresh_dir, stage_main

STAGE = "render"
FRAMES = Path("data") / "convert" / "frames.mkv"
MODEL = Path("models") / "model.safetensors"
OUT = Path("data") / STAGE


def run(params: Params) -> None:
    if not FRAMES.exists():
        raise StageFailed(f"{FRAMES} not found: run convert first")
    if not Path(params.target.uri).is_file():
        raise StageFailed(f"target {params.target.uri} not found")
    out = fresh_dir(OUT)
    video = out / "output.mp4"
    try:
        with atomic_path(video) as tmp:
            info = render_video(FRAMES, params.target.uri, tmp, params.render, record_name="output.json")
    except Rejected as exc:
        raise StageFailed(f"{exc.reason}: {exc.message}") from None
    try:
        record = build_record(params, output=video, target=params.target.uri, model=MODEL, render_info=info)
    except ValueError as exc:
        raise StageFailed(str(exc)) from None
    atomic_write_json(out / "output.json", record)
    write_metrics(out, {"frames": info["frames"], "label": int(info["label"]), "audio": int(info["audio"] is not None),
                        "bytes": video.stat().st_size})  # fmt: skip
    label = "labelled" if info["label"] else "NOT labelled (render.label: false, recorded in output.json)"
    print(f"[{STAGE}] {video} ({info['frames']} frames, {label}); provenance: {out / 'output.json'}", flush=True)


if __name__ == "__main__":
    stage_main(STAGE, run)
