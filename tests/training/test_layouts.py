"""Each model layout (df, liae) trains a few steps with occluders and the mask head, checkpoints,
resumes to the bit (torch.equal against an uninterrupted run), and converts (Swapper.swap gives
faces and masks of the right shapes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from facedag.training.loop import train
from facedag.training.model import Swapper
from tests.training.test_loop import FACE, load, tiny_data, tiny_project, with_train  # noqa: F401  (fixture)

STEPS = {"deterministic": True, "max_steps": 6, "checkpoint_every": 3, "eval_every": 3, "preview_every": 100,
         "occluder_prob": 0.5, "mask_weight": 1.0}


@pytest.mark.parametrize("layout", ["df", "liae"])
def test_layout_trains_resumes_bit_exactly_and_converts(tmp_path: Path, tiny_data: Path, layout: str) -> None:  # noqa: F811
    whole = tiny_project(tmp_path / "whole", tiny_data, {**STEPS, "layout": layout})
    parts = tiny_project(tmp_path / "parts", tiny_data, {**STEPS, "layout": layout})
    r = train(load(whole), whole, lambda _: None)
    assert r.step == 6 and r.resumed_from is None
    first = train(with_train(load(parts), max_steps=3), parts, lambda _: None)  # stops at 3, checkpointed
    assert first.step == 3
    logs: list[str] = []
    second = train(load(parts), parts, logs.append)
    assert second.resumed_from == 3 and second.step == 6
    assert any(f"{layout} layout" in line for line in logs)
    for name in ("model", "best"):
        a = load_file(str(whole / "models" / f"{name}.safetensors"))
        b = load_file(str(parts / "models" / f"{name}.safetensors"))
        assert a.keys() == b.keys() and any("mask" in k for k in a)
        assert all(torch.equal(a[k], b[k]) for k in a)
    record = json.loads((whole / "models" / "model.json").read_text())
    assert record["format"] == 2 and record["config"]["layout"] == layout and record["config"]["mask"] is True

    swapper = Swapper(whole / "models", "src")
    faces = np.random.default_rng(0).integers(0, 256, (3, FACE, FACE, 3), dtype=np.uint8)
    out, masks = swapper.swap(faces)
    assert out.shape == faces.shape and out.dtype == np.uint8
    assert masks.shape == (3, FACE, FACE) and masks.dtype == np.float32 and 0.0 <= masks.min() <= masks.max() <= 1.0
    assert np.array_equal(swapper(faces), out)


def test_a_layout_change_starts_afresh(tmp_path: Path, tiny_data: Path) -> None:  # noqa: F811
    root = tiny_project(tmp_path / "p", tiny_data, {**STEPS, "max_steps": 3})
    train(load(root), root, lambda _: None)
    logs: list[str] = []
    r = train(with_train(load(root), layout="liae", max_steps=4), root, logs.append)
    assert r.resumed_from is None and any(line.startswith("starting fresh") for line in logs)


def test_the_preview_shows_the_learned_mask() -> None:
    from facedag.training.model import ModelConfig, build_model
    from facedag.training.preview import PREVIEW_FACES, render_preview

    faces = {"src": torch.rand(PREVIEW_FACES, 3, FACE, FACE), "dst": torch.rand(PREVIEW_FACES, 3, FACE, FACE)}
    widths = {}
    for mask in (True, False):
        model = build_model(ModelConfig(FACE, 8, 8, 16, ("src", "dst"), mask=mask))
        grid = render_preview(model, faces, ["src", "dst"])
        assert grid.shape[0] == 3 * FACE + 2 * 2  # src>src, dst>dst, dst>src
        widths[mask] = grid.shape[1]
    assert widths[True] - widths[False] == PREVIEW_FACES * FACE  # a mask cell per face


@pytest.mark.parametrize("layout", ["df", "liae"])
@pytest.mark.parametrize("preset", ["demo", "small", "128", "256"])
def test_every_preset_builds_with_every_layout(preset: str, layout: str) -> None:
    """Shapes only, on torch's meta device (no memory, no arithmetic): the 256 preset's liae has 320 M parameters."""
    from facedag.training.model import ModelConfig, build_model
    from facedag.training.sizes import PRESETS

    p = PRESETS[preset]
    cfg = ModelConfig(p.face_size, p.encoder_width, p.decoder_width, p.bottleneck, ("src", "dst"), layout)
    with torch.device("meta"):
        model = build_model(cfg)
        outs = model.forward_all([torch.empty(2, 3, p.face_size, p.face_size)] * 2, together=True)
    for rgb, mask in outs:
        assert rgb.shape == (2, 3, p.face_size, p.face_size) and mask.shape == (2, 1, p.face_size, p.face_size)
