"""End to end: the Prefect flow runs the data stages of the real dvc.yaml through real DVC,
on the demo clips with tiny params; a second run skips everything, and a changed dedupe
param reruns only the dedupe stages."""

from __future__ import annotations

import json
import subprocess

import httpx
import pandas as pd
import pytest
import yaml
from prefect.settings import PREFECT_API_URL

from flows.pipeline import pipeline
from tests.conftest import SAMPLES, TINY, VENV_BIN, make_project, tool_env

pytestmark = pytest.mark.slow
DATA_STAGES = [f"{step}@{i}" for step in ("download", "trim", "extract", "align", "dedupe") for i in ("src", "dst")]


def _latest_artifact(key: str) -> dict:
    """The newest artifact with `key`, read back from the Prefect REST API."""
    response = httpx.get(f"{PREFECT_API_URL.value()}/artifacts/{key}/latest", timeout=30)
    response.raise_for_status()
    return response.json()


def _rows(data: object) -> list[dict]:
    """A table artifact's rows (the API returns them as JSON text)."""
    return json.loads(data) if isinstance(data, str) else list(data)


def _by_stage(rows: list[dict]) -> dict[str, str]:
    return {r["stage"]: r["status"] for r in rows}


def test_flow_builds_cached_datasets_and_reruns_only_what_changed(tmp_path, demo_sources, prefect_server):
    root = make_project(tmp_path / "proj", demo_sources, TINY)

    first = _by_stage(pipeline(root=str(root)))
    assert {s: first[s] for s in DATA_STAGES} == dict.fromkeys(DATA_STAGES, "ran")
    assert {first[s] for s in ("train", "convert", "render")} == {"not built yet"}
    for ident in ("src", "dst"):
        dataset = pd.read_parquet(root / f"data/dedupe/{ident}/dataset.parquet")
        assert 0 < len(dataset) <= TINY["dedupe"]["max_faces"]
        assert (root / f"data/dedupe/{ident}/report.png").stat().st_size > 0
        extract = json.loads((root / f"data/extract/{ident}/metrics.json").read_text())
        assert extract["faces"] > 0 and extract["frames_with_face"] <= extract["frames_sampled"]

    table = _latest_artifact("facedag-stages")  # read back from the Prefect API
    assert {row["stage"]: row["status"] for row in _rows(table["data"])} == first

    second = _by_stage(pipeline(root=str(root)))
    assert {s: second[s] for s in DATA_STAGES} == dict.fromkeys(DATA_STAGES, "skipped")

    params = yaml.safe_load((root / "params.yaml").read_text())
    params["dedupe"]["max_faces"] = 5
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = subprocess.run([str(VENV_BIN / "facedag"), "status"], cwd=root, env=tool_env(),
                            capture_output=True, text=True, check=True).stdout
    states = dict(line.split(None, 1) for line in status.splitlines())
    assert states["dedupe@src"] == "changed: param dedupe.max_faces 12 -> 5"
    assert states["extract@src"] == "up to date"
    assert states["train"] == "not built yet (frozen)"

    third = _by_stage(pipeline(root=str(root)))
    ran = sorted(s for s in DATA_STAGES if third[s] == "ran")
    assert ran == ["dedupe@dst", "dedupe@src"]
    assert all(third[s] == "skipped" for s in DATA_STAGES if s not in ran)
    assert len(pd.read_parquet(root / "data/dedupe/src/dataset.parquet")) <= 5

    repro = subprocess.run([str(VENV_BIN / "dvc"), "repro"], cwd=root, env=tool_env(), capture_output=True, text=True)
    assert repro.returncode == 0 and "Running stage" not in repro.stdout


@pytest.mark.skipif(not (SAMPLES / "video_02.mp4").exists(), reason="../shared/samples is absent")
def test_real_footage_through_the_data_stages(tmp_path, demo_sources):
    """`dvc repro` of the data stages on real footage (CC BY samples, used in place)."""
    real = {
        "src": {"sources": [{"uri": str(SAMPLES / "video_02.mp4"), "start": 2.0, "end": 12.0, "licence": "CC-BY-2.0"}]},
        "dst": {"sources": [{"uri": str(SAMPLES / "video_01.mp4"), "licence": "CC-BY-2.0"}]},
    }
    root = make_project(tmp_path / "real", demo_sources, {**TINY, "identities": real, "trim": {"max_seconds": 4}})
    repro = subprocess.run([str(VENV_BIN / "dvc"), "repro", "dedupe"], cwd=root, env=tool_env(),
                           capture_output=True, text=True)
    assert repro.returncode == 0, repro.stdout[-2000:] + repro.stderr[-2000:]
    assert "Traceback" not in repro.stdout + repro.stderr
    for ident in ("src", "dst"):
        trim = json.loads((root / f"data/trim/{ident}/metrics.json").read_text())
        assert 0 < trim["seconds_kept"] <= 4 + 1e-6
        faces = pd.read_parquet(root / f"data/extract/{ident}/faces.parquet")
        assert len(faces) > 0 and faces["track"].nunique() >= 1
        dataset = pd.read_parquet(root / f"data/dedupe/{ident}/dataset.parquet")
        assert 0 < len(dataset) <= TINY["dedupe"]["max_faces"]
