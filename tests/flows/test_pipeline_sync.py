"""With a default DVC remote, each stage run by the flow pulls what it needs and pushes what it
made (outputs and run-cache), so a worker's results reach the other machines."""

from __future__ import annotations

import subprocess

import pytest

from flows.pipeline import has_default_remote, pipeline
from flows.remote import add_remote
from tests.conftest import TINY, VENV_BIN, make_project, tool_env

pytestmark = pytest.mark.slow


def test_stages_push_their_outputs_and_run_cache(tmp_path, demo_sources, prefect_server):
    root = make_project(tmp_path / "proj", demo_sources, TINY)
    assert not has_default_remote(root)
    store = tmp_path / "store"
    add_remote(root, "store", str(store))
    assert has_default_remote(root)

    rows = pipeline(root=str(root), targets=["download@src"])
    assert [r["status"] for r in rows] == ["ran"]
    assert (store / "files").is_dir() and (store / "runs").is_dir()
    cloud = subprocess.run([str(VENV_BIN / "dvc"), "status", "--cloud", "download@src"], cwd=root, env=tool_env(),
                           capture_output=True, text=True, check=True)
    assert "in sync" in cloud.stdout, cloud.stdout

    # another machine's view: drop the local cache and outputs, and the stage comes back from the remote
    subprocess.run(["rm", "-rf", str(root / ".dvc" / "cache"), str(root / "data" / "download")], check=True)
    rows = pipeline(root=str(root), targets=["download@src"])
    assert [r["status"] for r in rows] == ["skipped"]
    assert any((root / "data/download/src/clips").iterdir())
