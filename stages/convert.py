"""convert: swap the `convert.replace` face in the target video with `convert.swap_to`'s.

    python -m stages.convert [--params params.yaml]

Checks the consent records of `convert.swap_to` and of the target first
(facedag.consent.require_consent), loads the model from `models/` (facedag.model.Swapper,
safetensors, no pickles), and runs facedag.convert.convert_video over `target.uri`. Writes,
under `data/convert/` (each atomically):

- `frames.mkv`: the lossless intermediate (FFV1, RGB planes), every target frame, same rate;
- `frames.parquet`: one row per target frame (facedag.convert.CONVERT_SCHEMA: frame, time,
  swapped, faces, score, mask_area, bbox, track);
- `metrics.json`: frames, frames_swapped, faces_swapped, faces_unaligned, tracks,
  mean_mask_area, fps, swap_seconds, seconds.

Fails with one line when consent is missing, the model is absent or has no decoder for
`swap_to`, the target cannot be read, or no face was swapped in any frame.
"""

from __future__ import annotations

from pathlib import Path

from facedag.consent import require_consent
from facedag.convert import convert_video
from facedag.params import Params
from facedag.records import Rejected, StageFailed, atomic_path, write_metrics
from facedag.stagekit import fresh_dir, stage_main

STAGE = "convert"
MODELS = Path("models")
OUT = Path("data") / STAGE


def resolve_device(device: str) -> str:
    """base.device: `auto` is CUDA when torch sees a GPU, else the CPU."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run(params: Params) -> None:
    cv = params.convert
    require_consent(params, [cv.swap_to], target=True)
    if not (MODELS / "model.safetensors").exists():
        raise StageFailed(f"{MODELS / 'model.safetensors'} not found: run train first")
    from facedag.model import Swapper

    try:
        swapper = Swapper(MODELS, cv.swap_to, device=resolve_device(params.base.device), batch=cv.batch)
    except KeyError as exc:
        raise StageFailed(str(exc.args[0])) from None
    except (OSError, ValueError, RuntimeError) as exc:
        raise StageFailed(f"cannot load the model from {MODELS}: {exc}"[:300]) from None
    out = fresh_dir(OUT)
    try:
        with atomic_path(out / "frames.mkv") as video, atomic_path(out / "frames.parquet") as table:
            stats = convert_video(params.target.uri, video, swapper, swapper.face_size, cv, table=table)
            if stats.frames_swapped == 0:
                where = f"{stats.frames} frames of {params.target.uri}"
                raise StageFailed(f"no {cv.replace!r} face found to swap in {where}")
    except Rejected as exc:
        raise StageFailed(f"target {params.target.uri}: {exc.reason}: {exc.message}") from None
    metrics = stats.metrics()
    write_metrics(out, metrics)
    print(f"[{STAGE}] {metrics['frames_swapped']}/{metrics['frames']} frames swapped "
          f"({cv.replace} -> {cv.swap_to}), {metrics['fps']} frames/s", flush=True)  # fmt: skip


if __name__ == "__main__":
    stage_main(STAGE, run)
