"""evaluate_model: the trained model on faces it never saw.

    python -m stages.evaluate_model [--params params.yaml]

Rebuilds each identity's held-out faces (data/dedupe/<ID>/holdout.parquet, whole shots that
training never saw) with its own decoder of `models/best.safetensors` (or the last weights,
`evaluate.model: last`) and writes `data/evaluate/model/metrics.json`:
`{<ID>: {ssim, psnr, l1, faces}, "mean_ssim": ...}` (facedag.quality.evaluate_model), which
`dvc metrics diff` and `dvc exp show` compare across runs.

Fails with one line when the model is missing; an identity without held-out faces gets
`faces: 0` and a warning (dedupe holds none out when it has a single shot).
"""

from __future__ import annotations

import sys
from pathlib import Path

from facedag.device import pick_device
from facedag.params import Params
from facedag.quality.evaluate_model import evaluate_model
from facedag.records import StageFailed, write_metrics
from facedag.stagekit import fresh_dir, stage_main
from facedag.training.files import WEIGHTS

STAGE = "evaluate_model"
MODELS = Path("models")
DEDUPE = Path("data") / "dedupe"
OUT = Path("data") / "evaluate" / "model"


def run(params: Params) -> None:
    name = WEIGHTS[params.evaluate.model]
    if not (MODELS / f"{name}.safetensors").is_file():
        raise StageFailed(f"{MODELS / f'{name}.safetensors'} not found: run train first")
    device = str(pick_device(params.device))
    try:
        scores = evaluate_model(MODELS, DEDUPE, list(params.identities), name=name, device=device)
    except (OSError, ValueError, KeyError) as exc:
        raise StageFailed(f"cannot evaluate {MODELS / f'{name}.safetensors'}: {exc}"[:300]) from None
    out = fresh_dir(OUT)
    rated = [s["ssim"] for s in scores.values() if s.get("faces")]
    metrics = {**scores, "mean_ssim": sum(rated) / len(rated) if rated else None, "weights": f"{name}.safetensors"}
    write_metrics(out, metrics)
    for ident, s in scores.items():
        if not s.get("faces"):
            print(f"[{STAGE}] warning: {ident} has no held-out faces (a single shot?): not scored", file=sys.stderr)
            continue
        print(f"[{STAGE}] {ident}: held-out SSIM {s['ssim']:.3f}, PSNR {s['psnr']:.2f} dB, L1 {s['l1']:.4f} "
              f"({s['faces']} faces, {name}.safetensors)", flush=True)  # fmt: skip


if __name__ == "__main__":
    stage_main(STAGE, run)
