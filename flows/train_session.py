"""One training session: the `train-session` deployment that `facedag serve` schedules.

Each run trains for one session (train.session_minutes, or the run's `minutes`), checkpoints and
exits; the next scheduled run resumes from that checkpoint. Training for a week is then a row of
short, independent runs, each of which can fail, be cancelled or move to another machine without
losing more than one session.

The train stage runs through the pipeline's own `run_stage` (one DVC stage in its own process
group) with `--force`: after a session DVC records train as up to date, and without --force the
next session would be skipped instead of resumed. The session budget reaches the stage as the
environment variable FACEDAG_TRAIN_MINUTES (facedag.training.stopping.SESSION_ENV), so no params change
and dvc.lock still describes the model that was trained.

Cancelling a run checkpoints first: the engine's SIGTERM reaches run_stage, which SIGTERMs the
stage's process group; the train stage finishes its step, checkpoints and exits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from facedag.params import load_params
from facedag.training.stopping import SESSION_ENV
from flows.dvc_graph import load_stages
from flows.pipeline import has_default_remote, run_stage

TRAIN_STAGE = "train"


def session_env(minutes: float) -> dict[str, str]:
    """The stage environment that limits this run to `minutes` (the stage takes min(max_minutes, this))."""
    if not minutes > 0:
        raise ValueError(f"a training session needs more than 0 minutes, got {minutes!r}")
    return {SESSION_ENV: repr(float(minutes))}


def read_model_record(root: str | Path) -> dict[str, Any]:
    """The training record in models/model.json (step, resumed_from, stopped, held_out_ssim), or {} when absent."""
    try:
        data = json.loads((Path(root) / "models" / "model.json").read_text())
    except (OSError, ValueError):
        return {}
    return {**data.get("info", {}), "step": data.get("step")}


@flow(name="facedag-train-session", log_prints=True)
def train_session(root: str = ".", minutes: float | None = None) -> dict[str, Any]:
    """Train for one session (`minutes`, default train.session_minutes), checkpoint, and exit.

    Returns the train stage's row (as in the pipeline's table) with the model's step, the step it
    resumed from and why it stopped.
    """
    logger = get_run_logger()
    root = str(Path(root).resolve())
    if minutes is None:
        minutes = load_params(Path(root) / "params.yaml").train.session_minutes
    stages = load_stages(root)
    if TRAIN_STAGE not in stages:
        raise KeyError(f"no {TRAIN_STAGE!r} stage in {root}/dvc.yaml")
    logger.info("training session of at most %g min in %s", minutes, root)
    row = run_stage(stages[TRAIN_STAGE], root, extra_args=("--force",), env=session_env(minutes),
                    sync=has_default_remote(root))
    record = read_model_record(root)
    row.update(step=record.get("step"), resumed_from=record.get("resumed_from"), stopped=record.get("stopped"))
    resumed = "a fresh start" if row["resumed_from"] is None else f"step {row['resumed_from']}"
    preview = Path(root) / "models" / "previews" / "latest.png"
    create_markdown_artifact(
        key="facedag-train-session",
        markdown=(f"## facedag training session\n\n- from {resumed} to step {row['step']} "
                  f"(stopped: {row['stopped']}) in {row['seconds']} s, budget {minutes:g} min\n"
                  f"- held-out SSIM: {record.get('held_out_ssim')}\n"
                  + (f"- latest preview: [{preview}]({preview.as_uri()})\n" if preview.exists() else "")),
        description="what this training session did; the next one resumes from its checkpoint",
    )
    logger.info("session done: step %s (from %s), stopped: %s", row["step"], resumed, row["stopped"])
    return row
