"""The Prefect flow over the DVC DAG: one task per DVC stage, each `dvc repro --single-item`.

DVC decides what to skip (its cache and dvc.lock); Prefect adds logs, retries, the UI,
schedules and artifacts. Stages of one step (`extract@src`, `extract@dst`, ...) run side by
side. With no PREFECT_API_URL, Prefect starts its ephemeral local server for the run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE

from flows.dvc_graph import StageInfo, load_stages, ordered_steps, repair_dvc_state, with_upstream

_RAN = re.compile(r"^Running stage '")
# What a person opens after a run, when it exists (globs, relative to the project root).
RESULTS = ["data/report/index.html", "data/render/output.mp4", "data/render/output.json", "models/previews/latest.png",
           "data/dedupe/*/report.png", "data/trim/*/coverage.png"]


def result_files(root: str | Path) -> list[Path]:
    """The run's outputs worth looking at, in RESULTS order."""
    root = Path(root)
    return [path for pattern in RESULTS for path in sorted(root.glob(pattern))]


def next_steps(root: str | Path) -> list[str]:
    """The three lines a finished run ends with: the video, the report, the marks (when they exist)."""
    root = Path(root)
    video, report = root / "data/render/output.mp4", root / "data/report/index.html"
    lines = []
    if video.is_file():
        lines.append(f"output video: {video} (the swapped video, labelled, watermarked, record beside it)")
    if report.is_file():
        lines.append(f"report:       open {report.resolve().as_uri()} in a browser")
    if video.is_file():
        lines.append(f"verify marks: .venv/bin/facedag verify {video}")
    return lines


_SKIPPED = re.compile(r"didn't change, skipping$")
# the train stage's log line: "train: step 100/800 | loss ... | held-out SSIM ... | EG/s ... | min left ..."
_STEP = re.compile(r"\bstep (\d+)/(\d+) \| (.+)$")


def has_default_remote(root: str | Path) -> bool:
    """Whether the project has a default DVC remote (.dvc/config or config.local): then each
    stage pulls what it needs first and pushes what it made after, so other machines see it."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return bool(repo.config.get("core", {}).get("remote"))


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The stage commands' environment: this interpreter's venv first (dvc.yaml says `python`), no telemetry,
    plus `extra` (e.g. a training session's budget)."""
    env = dict(os.environ, **(extra or {}))
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update(DVC_NO_ANALYTICS="1", DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PYTHONUNBUFFERED="1")
    return env


def _counts(root: Path, info: StageInfo) -> tuple[dict[str, Any], int | None]:
    """Numbers from the stage's metrics.json files, and the line count of its rejected.jsonl."""
    counts: dict[str, Any] = {}
    rejected: int | None = None
    for rel in info.metrics:
        path = root / rel
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        counts.update({k: v for k, v in data.items() if isinstance(v, int | float) and not isinstance(v, bool)})
        rejected_file = path.with_name("rejected.jsonl")
        if rejected_file.exists():
            rejected = sum(1 for line in rejected_file.open(encoding="utf-8", errors="replace") if line.strip())
    return counts, rejected


def _summary_counts(counts: dict[str, Any], limit: int = 6) -> str:
    return ", ".join(f"{k}={round(v, 3) if isinstance(v, float) else v}" for k, v in list(counts.items())[:limit])


# DVC is the cache: Prefect must never skip a stage on its own, hence NO_CACHE.
@task(task_run_name="{info.name}", retries=0, cache_policy=NO_CACHE)
def run_stage(info: StageInfo, root: str, extra_args: tuple[str, ...] = (),
              env: dict[str, str] | None = None, sync: bool = False) -> dict[str, Any]:
    """Run one DVC stage in its own process group, streaming its output to the Prefect log.

    `extra_args` go to `dvc repro` (a training session passes `--force`), `env` to the stage.
    With `sync` (a default remote is set), the stage runs as `dvc repro --pull` and its
    outputs and run-cache are pushed after. Training steps in the log update a progress
    artifact (step, losses, EG/s, time left) as they come.
    """
    logger = get_run_logger()
    started = time.monotonic()
    if info.frozen:
        logger.info("%s is frozen in dvc.yaml: not built yet, skipped", info.name)
        return {"stage": info.name, "status": "not built yet", "seconds": 0.0, "counts": "", "rejected": None}
    dvc = str(Path(sys.executable).parent / "dvc")
    cmd = [dvc, "repro", "--single-item", *(("--pull",) if sync else ()), *extra_args, info.name]
    progress_id = None
    proc = subprocess.Popen(cmd, cwd=root, env=_env(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", start_new_session=True)
    status = "skipped"
    tail: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            if not line:
                continue
            if _RAN.search(line):
                status = "ran"
            elif _SKIPPED.search(line):
                status = "skipped"
            elif step := _STEP.search(line):
                done = 100.0 * int(step[1]) / max(int(step[2]), 1)
                note = f"{info.name}: step {step[1]}/{step[2]} | {step[3]}"
                if progress_id is None:
                    progress_id = create_progress_artifact(done, key=f"facedag-{info.step}-progress", description=note)
                else:
                    update_progress_artifact(progress_id, done, description=note)
            logger.info("%s | %s", info.name, line)
            tail = [*tail[-4:], line]
        code = proc.wait()
    except BaseException:  # cancelled or interrupted: stop the whole stage process group, then re-raise
        os.killpg(proc.pid, signal.SIGTERM)
        # dvc exits at once; the stage itself (train) finishes its step and checkpoints first
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        proc.wait(timeout=30)
        raise
    seconds = round(time.monotonic() - started, 2)
    counts, rejected = _counts(Path(root), info)
    if code != 0:
        reason = next((t for t in reversed(tail) if "error" in t.lower()), tail[-1] if tail else f"exit {code}")
        raise RuntimeError(f"{info.name} failed after {seconds}s: {reason}")
    if sync:
        push = subprocess.run([dvc, "push", "--run-cache", info.name], cwd=root, env=_env(env), capture_output=True,
                              text=True, errors="replace", timeout=3600, check=False)  # fmt: skip
        logger.info("%s | push: %s", info.name, " ".join((push.stdout + push.stderr).split())[-200:])
        if push.returncode != 0:
            raise RuntimeError(f"{info.name} ran but its outputs could not be pushed: {push.stderr.strip()[-300:]}")
    return {"stage": info.name, "status": status, "seconds": seconds, "counts": _summary_counts(counts),
            "rejected": rejected}


@flow(name="facedag-pipeline", log_prints=True)
def pipeline(root: str = ".", targets: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the DAG (or the named stages/steps and what they need), step by step.

    Within a step the `@ID` stages run side by side; a failed stage stops the steps after
    it, after its siblings have finished. A table artifact lists every stage: ran, skipped,
    not built yet or failed, with its duration, counts and rejected items.
    """
    logger = get_run_logger()
    root = str(Path(root).resolve())
    stages = load_stages(root)
    only = with_upstream(stages, targets) if targets else None
    sync = has_default_remote(root)
    if sync:
        logger.info("a default DVC remote is set: each stage pulls what it needs and pushes what it makes")
    rows: list[dict[str, Any]] = []
    failure: str | None = None
    for group in ordered_steps(stages, only):
        if failure:
            rows.extend({"stage": n, "status": "not run", "seconds": 0.0, "counts": "", "rejected": None}
                        for n in group)
            continue
        for line in repair_dvc_state(root):  # between steps, when no dvc runs
            logger.warning(line)
        futures = {name: run_stage.submit(stages[name], root, sync=sync) for name in group}
        for name, future in futures.items():
            try:
                rows.append(future.result())
            except Exception as exc:  # one line per failed stage; the rest of the step has run
                failure = failure or str(exc)
                rows.append({"stage": name, "status": "failed", "seconds": None, "counts": str(exc),
                             "rejected": None})
    create_table_artifact(key="facedag-stages", table=rows, description="facedag: what each DVC stage did in this run")
    files = result_files(root)
    if files:
        links = "\n".join(f"- [{path.relative_to(root)}]({path.as_uri()})" for path in files)
        create_markdown_artifact(key="facedag-results", markdown=f"## facedag results\n\n{links}\n",
                                 description="the output video, its provenance record and the reports")
    for row in rows:
        logger.info("%-14s %-13s %7s  %s", row["stage"], row["status"],
                    "" if row["seconds"] is None else f"{row['seconds']:.1f}s", row["counts"])
    if failure:
        raise RuntimeError(failure)
    return rows
