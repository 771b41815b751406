"""End to end: the Prefect flow runs the whole DAG of the real dvc.yaml through real DVC, on
the demo clips with tiny params, and renders a labelled, recorded video; a second run skips
everything; a render param reruns only render; a dedupe param reruns dedupe and what depends
on it, and nothing upstream."""

from __future__ import annotations

import json
import subprocess
import sys

import av
import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from prefect.settings import PREFECT_API_URL

from facedag.records import sha256_file
from facedag.sources.media import iter_frames, probe
from facedag.swap.render import read_tags
from flows.pipeline import pipeline
from tests.conftest import SAMPLES, TINY, VENV_BIN, make_project, tool_env

pytestmark = pytest.mark.slow
DATA_STAGES = [f"{step}@{i}" for step in ("download", "profile", "trim", "extract", "align", "dedupe")
               for i in ("src", "dst")]  # fmt: skip
ALL_STAGES = [*DATA_STAGES, "train", "evaluate_model", "convert", "evaluate_video", "render", "export", "report"]


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


def _set_param(root, section: str, key: str, value) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params[section][key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _check_render(root) -> None:
    """The rendered video against the target: length, audio, swapped pixels, label, tag, record."""
    target, output = root / "data/demo/target.mp4", root / "data/render/output.mp4"
    t_info, o_info = probe(target), probe(output)
    assert o_info.frames == t_info.frames and abs(o_info.duration - t_info.duration) < 0.1
    assert t_info.has_audio and o_info.has_audio
    with av.open(str(output)) as container:
        assert any(s.type == "audio" for s in container.streams)
    tags = read_tags(output)
    assert "synthetic" in " ".join(f"{k}={v}" for k, v in tags.items()).lower() and "output.json" in str(tags)

    table = pd.read_parquet(root / "data/convert/frames.parquet")
    assert len(table) == t_info.frames and table["swapped"].sum() > 0.8 * len(table)
    swapped = table[table["swapped"]].set_index("frame")
    inside, outside = [], []
    for (_, _, before), (index, _, after) in zip(iter_frames(target), iter_frames(output), strict=True):
        if index not in swapped.index or index % 10:
            continue
        x0, y0, x1, y1 = np.asarray(swapped.loc[index, "bbox"], dtype=int)
        diff = np.abs(before.astype(np.int16) - after.astype(np.int16)).mean(axis=2)
        inside.append(diff[y0:y1, x0:x1].mean())
        keep = np.ones_like(diff, dtype=bool)
        pad_x, pad_y = (x1 - x0) // 2, (y1 - y0) // 2
        keep[max(0, y0 - pad_y):y1 + pad_y, max(0, x0 - pad_x):x1 + pad_x] = False
        keep[int(0.8 * diff.shape[0]):, int(0.5 * diff.shape[1]):] = False  # the label's corner
        outside.append(diff[keep].mean())
    assert np.mean(inside) > 8, "the face region should have changed"
    assert np.mean(outside) < 3, "pixels outside the swapped masks should be unchanged, within codec tolerance"

    record = json.loads((root / "data/render/output.json").read_text())
    assert record["synthetic"] and record["label"]["visible"] and record["label"]["text"] == "AI-generated"
    assert record["target"]["sha256"] == sha256_file(target)
    for ident in ("src", "dst"):
        assert [s["source_sha256"] for s in record["sources"][ident]] == [sha256_file(root / f"data/demo/{ident}.mp4")]
    assert record["model"]["sha256"] == sha256_file(root / "models/best.safetensors")
    assert record["consent"]["src"]["basis"] == "licence" and record["consent"]["target"]


def test_flow_renders_a_labelled_swap_and_reruns_only_what_changed(tmp_path, demo_sources, prefect_server):
    root = make_project(tmp_path / "proj", demo_sources, TINY)

    first = _by_stage(pipeline(root=str(root)))
    assert first == dict.fromkeys(ALL_STAGES, "ran")
    for ident in ("src", "dst"):
        dataset = pd.read_parquet(root / f"data/dedupe/{ident}/dataset.parquet")
        assert 0 < len(dataset) <= TINY["dedupe"]["max_faces"]
        assert (root / f"data/dedupe/{ident}/report.png").stat().st_size > 0
        extract = json.loads((root / f"data/extract/{ident}/metrics.json").read_text())
        assert extract["faces"] > 0 and extract["frames_with_face"] <= extract["frames_sampled"]
    assert (root / "models/previews/latest.png").exists()
    _check_render(root)
    model_scores = json.loads((root / "data/evaluate/model/metrics.json").read_text())
    for ident in ("src", "dst"):  # tiny params may leave one shot, then nothing is held out (and it says so)
        scores = model_scores[ident]
        assert scores["faces"] == 0 or 0 < scores["ssim"] < 1, scores
    video = json.loads((root / "data/evaluate/video/metrics.json").read_text())
    assert video["frames_swapped"] > 0 and video["flicker"] > 0 and video["colour_gap"] is not None
    assert 0 < video["detect_rate"] <= 1 and set(video["goals"]) == {"flicker", "seam", "colour_gap"}
    table = _latest_artifact("facedag-stages")  # read back from the Prefect API
    assert _by_stage(_rows(table["data"])) == first
    results = _latest_artifact("facedag-results")["data"]
    assert "data/render/output.mp4" in results and "data/report/index.html" in results
    assert (root / "data/report/index.html").stat().st_size > 0
    progress = _latest_artifact("facedag-train-progress")  # updated from the train stage's log as it ran
    assert progress["type"] == "progress" and float(progress["data"]) == 100.0

    second = _by_stage(pipeline(root=str(root)))
    assert second == dict.fromkeys(ALL_STAGES, "skipped")

    _set_param(root, "render", "label", False)
    third = _by_stage(pipeline(root=str(root)))
    # the report shows the new output; export (off) rewrites its off-record after a new output.json
    assert [s for s in ALL_STAGES if third[s] == "ran"] == ["render", "export", "report"]
    record = json.loads((root / "data/render/output.json").read_text())
    assert record["label"] == {"visible": False, "text": None, "turned_off_by": "render.label: false in params.yaml"}

    _set_param(root, "dedupe", "max_faces", 5)
    status = subprocess.run([str(VENV_BIN / "facedag"), "status"], cwd=root, env=tool_env(),
                            capture_output=True, text=True, check=True).stdout
    states = dict(line.split(None, 1) for line in status.splitlines())
    assert states["dedupe@src"] == "changed: param dedupe.max_faces 12 -> 5"
    assert states["extract@src"] == "up to date"

    fourth = _by_stage(pipeline(root=str(root)))
    assert sorted(s for s in DATA_STAGES if fourth[s] == "ran") == ["dedupe@dst", "dedupe@src"]
    assert fourth["evaluate_model"] == "ran"
    assert fourth["train"] == "ran"  # its data changed
    assert len(pd.read_parquet(root / "data/dedupe/src/dataset.parquet")) <= 5

    repro = subprocess.run([str(VENV_BIN / "dvc"), "repro"], cwd=root, env=tool_env(), capture_output=True, text=True)
    assert repro.returncode == 0 and "Running stage" not in repro.stdout

    # `facedag run` as a newcomer on a busy machine: no PREFECT_API_URL, a fresh PREFECT_HOME (the
    # local server creates its database on this start), three processes keeping both cores busy.
    # It succeeds, runs nothing, and ends with the three lines (video, report, verify); the
    # timeout is the bound on its time
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(3)]
    try:
        env = {k: v for k, v in tool_env().items() if k != "PREFECT_API_URL"}
        env["PREFECT_HOME"] = str(tmp_path / "fresh-prefect-home")
        run = subprocess.run([str(VENV_BIN / "facedag"), "run"], cwd=root, env=env, capture_output=True, text=True,
                             timeout=900)
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "starting the local Prefect server; the first start sets up its database" in run.stdout
    assert f"facedag run: {len(ALL_STAGES)} stages, 0 ran" in run.stdout
    last = run.stdout.strip().splitlines()[-3:]
    assert [line.split(":")[0] for line in last] == ["output video", "report", "verify marks"], last


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
