"""Fixtures shared across the suite: telemetry off, a Prefect test server, and throwaway
DVC projects (a temp git repo holding a copy of this project's code and params)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.local_server import STARTUP_S

for _key, _value in (("DO_NOT_TRACK", "1"), ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"), ("DVC_NO_ANALYTICS", "1")):
    os.environ.setdefault(_key, _value)

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "samples"
VENV_BIN = Path(sys.executable).parent


def tool_env() -> dict[str, str]:
    """The environment for subprocesses: this venv first on PATH (dvc.yaml says `python`)."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def deep_update(target: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Merge nested `changes` into `target` (dicts merge, everything else replaces)."""
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            deep_update(target[key], value)
        else:
            target[key] = value
    return target


@pytest.fixture(scope="session")
def demo_sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo clips, built once per test session (they take a few seconds)."""
    from facedag.sources.demo import build_all

    out = tmp_path_factory.mktemp("demo")
    build_all(out)
    return out


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """A real Prefect API (temporary SQLite database and server on 127.0.0.1) for the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=STARTUP_S):
        yield


def make_project(root: Path, demo: Path, params: dict[str, Any] | None = None) -> Path:
    """A fresh DVC project in `root`: this project's code, dvc.yaml and params.yaml (with
    `params` merged in), the demo clips in data/demo, inside a new git repo."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("facedag", "stages", "flows"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy2(REPO / name, root / name)
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    deep_update(data, params or {})
    (root / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    shutil.copytree(demo, root / "data" / "demo")
    env = tool_env()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True, env=env)
    subprocess.run([str(VENV_BIN / "dvc"), "init", "-q"], cwd=root, check=True, env=env)
    return root


# Small enough for CI on 2 cores, big enough that every stage does real work.
TINY = {
    "base": {"face_size": 64},
    "trim": {"max_seconds": 3, "sample_fps": 2},
    "extract": {"fps": 4},
    "dedupe": {"max_faces": 12},
    "train": {"max_steps": 12, "batch_size": 4, "encoder_width": 8, "decoder_width": 8, "bottleneck": 32,
              "checkpoint_every": 6, "preview_every": 6, "eval_every": 6},
    "render": {"preset": "veryfast"},
}
