"""stages/convert.py: convert.mask learned on a model trained before the mask head stops with one
clear line (before any frame is read)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from facedag.records import StageFailed
from facedag.training.model import ModelConfig, build_model, save_model
from tests.training.test_loop import FACE, load, tiny_data, tiny_project  # noqa: F401  (tiny_data is a fixture)


def test_learned_mask_on_a_mask_less_model_is_one_line(tmp_path: Path, tiny_data: Path,  # noqa: F811
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from stages import convert

    root = tiny_project(tmp_path / "p", tiny_data)
    old = ModelConfig(FACE, 8, 8, 16, ("src", "dst"), mask=False)
    torch.manual_seed(0)
    save_model(build_model(old), old, root / "models", {"step": 1}, name="best")
    record = json.loads((root / "models" / "best.json").read_text())
    del record["config"]["mask"]  # as format 1 wrote it
    (root / "models" / "best.json").write_text(json.dumps(record))
    params = load(root)
    params.convert.mask = "learned"
    monkeypatch.chdir(root)
    with pytest.raises(StageFailed, match="has no learned mask") as err:
        convert.run(params)
    assert "\n" not in str(err.value)
