"""Training curves with dvclive (models/live): resumed runs continue them without going back in time."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from facedag.records import atomic_write_bytes
from facedag.training.scoring import holdout_score


def _truncate_live(live_dir: Path, step: int) -> None:
    """Drop rows past `step` from dvclive's metric histories (left by a run killed after its last
    checkpoint), so the resumed run's rows continue the curves without going back in time."""
    for tsv in (live_dir / "plots" / "metrics").rglob("*.tsv"):
        lines = tsv.read_text().splitlines()
        if not lines:
            continue
        header = lines[0].split("\t")
        if "step" not in header:
            continue
        col = header.index("step")
        kept = [ln for ln in lines[1:] if ln.split("\t")[col].isdigit() and int(ln.split("\t")[col]) <= step]
        if len(kept) != len(lines) - 1:
            atomic_write_bytes(tsv, ("\n".join([lines[0], *kept]) + "\n").encode())


def open_live(live_dir: Path, resume_step: int | None) -> Any:
    """A dvclive Live in `live_dir`: resumed (curves continue) or fresh. Writes no dvc.yaml and
    saves no experiment: the train stage's outs and metrics are declared in dvc.yaml by hand."""
    from dvclive import Live

    class FileLive(Live):
        """Live without its DVC experiment bookkeeping, which facedag does not use (the stage's
        outs are in dvc.yaml) and which crashes in a git repo with no commit yet (dvclive 3.49
        asks git for HEAD outside its own error handling)."""

        def _init_dvc(self) -> None:
            return None

    if resume_step is not None and live_dir.exists():
        _truncate_live(live_dir, resume_step)
    return FileLive(dir=str(live_dir), resume=resume_step is not None, report=None, save_dvc_exp=False,
                    dvcyaml=False)


def log_metrics(live: Any, step: int, losses: dict[str, float], evals: dict[str, dict[str, float]],
                steps_per_s: float, egs_per_s: float) -> dict[str, float]:
    """One row of the curves at `step` (losses, held-out SSIM and PSNR per identity, the score,
    speed), and the summary; returns the row as numbers (model.json and the log read it)."""
    live.step = step
    out: dict[str, float] = {"step": step}
    for name, v in losses.items():
        live.log_metric(f"loss/{name}", round(v, 6))
        out[f"loss/{name}"] = v
    for name, e in evals.items():
        for key in ("ssim", "psnr"):
            if math.isfinite(e[key]):
                live.log_metric(f"{key}_holdout/{name}", round(e[key], 6))
            out[f"{key}_holdout/{name}"] = e[key]
    score = holdout_score(evals) if evals else float("nan")
    if math.isfinite(score):
        live.log_metric("score_holdout", round(score, 6))
    out["score_holdout"] = score
    live.log_metric("steps_per_s", round(steps_per_s, 4))
    live.log_metric("egs_per_s", round(egs_per_s, 3))
    out["steps_per_s"], out["egs_per_s"] = steps_per_s, egs_per_s
    live.make_summary()
    return out
