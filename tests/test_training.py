"""The training loop in-process on tiny real data (two demo portraits aligned a few ways):
outputs, dvclive curves that continue across runs, raising max_steps continues the run, and a
data change starts fresh with the old checkpoints moved aside."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from facedag.dataset import dataset_path, load_dataset, write_portrait_dataset
from facedag.demo import write_evidence
from facedag.params import Params
from facedag.training import train

REPO = Path(__file__).resolve().parents[1]
FACE = 32
TINY_TRAIN = {"max_steps": 6, "batch_size": 4, "encoder_width": 8, "decoder_width": 8, "bottleneck": 16,
              "checkpoint_every": 3, "eval_every": 3, "preview_every": 3, "keep_checkpoints": 2}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """data/dedupe/{src,dst}/dataset.parquet at 32 px: 3 tracks x 4 faces each."""
    root = tmp_path_factory.mktemp("tinydata")
    for name, portrait in (("src", "astronaut"), ("dst", "grace_hopper")):
        write_portrait_dataset(dataset_path(root, name), portrait, FACE, tracks=3, per_track=4, seed=1)
    return root


def tiny_project(root: Path, data: Path, train: dict[str, Any] | None = None) -> Path:
    """A project folder: params.yaml (this repo's, tiny train/base) and the tiny data."""
    root.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["base"] = {**params.get("base", {}), "face_size": FACE}
    params["train"] = {**TINY_TRAIN, **(train or {})}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(data / "data", root / "data", dirs_exist_ok=True)
    write_evidence(root / "data" / "demo")  # the consent records' evidence, where params.yaml names it
    return root


def load(root: Path) -> Params:
    return Params.model_validate(yaml.safe_load((root / "params.yaml").read_text()))


def test_dataset_split_by_track(tiny_data: Path) -> None:
    sets = load_dataset(tiny_data, ["src", "dst"], FACE, holdout=0.34, seed=0)
    for fs in sets.values():
        assert fs.images.shape == (12, 3, FACE, FACE) and not fs.holdout_is_train
        held = {fs.groups[i] for i in fs.holdout_idx.tolist()}
        trained = {fs.groups[i] for i in fs.train_idx.tolist()}
        assert len(held) == 1 and not held & trained


def test_train_outputs_curves_and_continue(tmp_path: Path, tiny_data: Path) -> None:
    root = tiny_project(tmp_path / "p", tiny_data)
    logs: list[str] = []
    r = train(load(root), root, logs.append)
    assert (r.step, r.resumed_from, r.stopped) == (6, None, "max_steps")
    models = root / "models"
    record = json.loads((models / "model.json").read_text())
    assert record["step"] == 6 and record["identities"] == ["src", "dst"] and record["dataset_hash"]
    assert (models / "model.safetensors").stat().st_size > 0
    assert sorted(p.name for p in (models / "checkpoints").glob("step-*.pt")) == [
        "step-000000003.pt", "step-000000006.pt"]
    assert {p.name for p in (models / "previews").iterdir()} >= {"step-000000003.png", "step-000000006.png",
                                                                   "latest.png"}
    assert any("EG/s" in line and "min left" in line and "loss src" in line for line in logs)

    # raising max_steps continues the same run; the dvclive curves continue with it
    params = load(root)
    params.train.max_steps = 9
    logs.clear()
    r = train(params, root, logs.append)
    assert (r.step, r.resumed_from) == (9, 6) and "resumed from step 6" in logs
    steps = [int(line.split("\t")[0]) for line in
             (models / "live/plots/metrics/loss/src.tsv").read_text().splitlines()[1:]]
    assert steps == [3, 6, 9]
    summary = json.loads((models / "live/metrics.json").read_text())
    assert summary["step"] == 9 and set(summary["ssim_holdout"]) == {"src", "dst"}

    # a data change: fresh start, old checkpoints and curves moved aside, not deleted
    write_portrait_dataset(dataset_path(root, "dst"), "grace_hopper", FACE, tracks=2, per_track=3, seed=9)
    logs.clear()
    r = train(params, root, logs.append)
    assert r.resumed_from is None and r.step == 9
    assert any(line.startswith("starting fresh") and "dataset changed" in line for line in logs)
    stale = list((models / "checkpoints").glob("stale-*"))
    assert len(stale) == 1 and (stale[0] / "live").is_dir() and len(list(stale[0].glob("step-*.pt"))) == 2
