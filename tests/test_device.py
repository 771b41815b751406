"""The device helper: one line for a device this machine lacks, precision by what the device
supports, and the `device` param tracked by the three model stages only (real dvc status)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from facedag.device import pick_device, pick_precision
from facedag.params import load_params
from facedag.records import StageFailed
from tests.conftest import VENV_BIN, tool_env

REPO = Path(__file__).resolve().parents[1]


def test_pick_device_validates_with_one_line() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(StageFailed, match=r"^device: 'tpu' is not (a|supported)") as exc:
        pick_device("tpu")
    assert "\n" not in str(exc.value)
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        with pytest.raises(StageFailed, match=rf"^device: cuda:{n} but this machine has {n} CUDA GPU"):
            pick_device(f"cuda:{n}")
    else:
        for name in ("cuda", "cuda:1"):
            with pytest.raises(StageFailed, match=rf"^device: {name} but torch .* sees no CUDA GPU here") as exc:
                pick_device(name)
            assert "\n" not in str(exc.value)
    assert pick_precision(torch.device("cpu")) == "fp32"


def test_base_device_says_where_it_moved(tmp_path: Path) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["base"]["device"] = "cuda"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(StageFailed, match=r"base: .*base\.device moved to the top-level `device` key"):
        load_params(tmp_path / "params.yaml")
    del params["base"]["device"]
    params["device"] = "cuda:7"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert load_params(tmp_path / "params.yaml").device == "cuda:7"  # valid here; pick_device checks the machine
    params["device"] = "gpu"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(StageFailed, match=r"^.*params\.yaml: device: String should match pattern"):
        load_params(tmp_path / "params.yaml")


def test_changing_device_reruns_only_the_model_stages(tmp_path: Path) -> None:
    """This repo's dvc.yaml with its params lists as they are (commands reduced to `true`, files
    dropped), run once by real DVC in a temp git repo; then `device` changes and dvc status names
    exactly train, evaluate_model and convert, and render, which tracks the whole params.yaml
    because output.json records all of it (and which follows convert's new frames anyway):
    none of the data half's stages."""
    dvc = [str(VENV_BIN / "dvc")]
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())
    for stage in pipeline["stages"].values():
        body = stage.get("do", stage)
        body["cmd"] = "true"
        for key in ("deps", "outs", "metrics", "plots"):
            body.pop(key, None)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    env = tool_env()

    def run(*args: str) -> str:
        return subprocess.run(list(args), cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout

    run("git", "init", "-q")
    run(*dvc, "init", "-q")
    run(*dvc, "repro", "-q")
    assert json.loads(run(*dvc, "status", "--json")) == {}
    params = (tmp_path / "params.yaml").read_text()
    assert "\ndevice: auto\n" in params
    (tmp_path / "params.yaml").write_text(params.replace("\ndevice: auto\n", "\ndevice: cuda\n"))
    changed = json.loads(run(*dvc, "status", "--json"))
    assert set(changed) == {"train", "evaluate_model", "convert", "render"}, changed
    assert all(v == [{"changed deps": {"params.yaml": {"device": "modified"}}}] for v in changed.values())
