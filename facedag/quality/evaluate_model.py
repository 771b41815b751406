"""evaluate_model: each identity's held-out faces (dedupe's holdout.parquet: whole shots the
training never saw) rebuilt by its own decoder of the chosen weights (models/best by default):
SSIM, PSNR and L1 over the face region (facedag.quality.metrics.reconstruction_metrics), which
`dvc metrics diff` and `dvc exp show` compare across runs. Faces go through the model in batches.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from facedag.quality.metrics import reconstruction_metrics
from facedag.training.dataset import read_faces
from facedag.training.losses import face_region
from facedag.training.model import Swapper


def evaluate_model(
    models_dir: str | os.PathLike[str],
    dedupe_dir: str | os.PathLike[str],
    identities: Iterable[str],
    name: str = "best",
    device: str = "cpu",
    batch: int = 32,
) -> dict[str, dict[str, Any]]:
    """{identity: {ssim, psnr, l1, faces}} on the held-out faces; `faces` 0 (and no figures)
    when dedupe held none out for that identity."""
    out: dict[str, dict[str, Any]] = {}
    for ident in identities:
        swapper = Swapper(models_dir, ident, device=device, batch=batch, name=name)
        path = Path(dedupe_dir) / ident / "holdout.parquet"
        faces = read_faces(path, swapper.face_size)[0] if path.is_file() else np.zeros((0,))
        if len(faces) == 0:
            out[ident] = {"faces": 0}
            continue
        region = face_region(swapper.face_size)[0, 0].numpy()
        rebuilt = np.concatenate([swapper(faces[i : i + batch]) for i in range(0, len(faces), batch)])
        scores = reconstruction_metrics(rebuilt, faces, region)
        out[ident] = {"ssim": scores["ssim"], "psnr": scores["psnr"], "l1": scores["l1"], "faces": len(faces)}
    return out
