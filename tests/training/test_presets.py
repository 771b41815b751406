"""Size presets: the table's memory column is what the estimate gives, params fill from the
preset unless set, and `batch_size: auto` (the CPU's documented default; on a GPU the largest
estimated batch, halved while a trial step runs out of memory)."""

from __future__ import annotations

import pytest
import torch

from facedag.params import Train
from facedag.training.model import ModelConfig, build_model
from facedag.training.presets import GIB, auto_batch, estimate_bytes, largest_fitting, trial_step
from facedag.training.sizes import PRESETS, Size, resolve


def cfg_of(name: str) -> ModelConfig:
    p = PRESETS[name]
    return ModelConfig(p.face_size, p.encoder_width, p.decoder_width, p.bottleneck, ("src", "dst"))


@pytest.mark.parametrize("name", list(PRESETS))
def test_the_table_states_the_estimate(name: str) -> None:
    """Change a preset or the model and this says which memory figure to update."""
    assert PRESETS[name].gpu_gib == round(estimate_bytes(cfg_of(name), PRESETS[name].batch) / GIB, 1)


def test_the_real_size_model_is_the_128_preset() -> None:
    assert round(sum(p.numel() for p in build_model(cfg_of("128")).parameters()) / 1e6, 1) == 59.9


def test_params_fill_from_the_preset_unless_set() -> None:
    assert resolve(Train(preset="128")) == Size(64, 64, 512, 32)
    assert resolve(Train(preset="256", bottleneck=256, batch_size="auto")) == Size(64, 64, 256, "auto")
    assert resolve(Train(encoder_width=8)) == Size(8, 16, 128, 8)  # the demo's otherwise
    with pytest.raises(ValueError):
        Train(preset="512")
    with pytest.raises(ValueError):
        Train(batch_size=0)


def test_auto_batch() -> None:
    logs: list[str] = []
    assert auto_batch(cfg_of("128"), torch.device("cpu"), 32, 2, logs.append) == 16  # each of 2 ranks' share
    assert logs == ["batch_size auto on the cpu: the preset's default 32 per identity (no GPU memory to fill)"]

    cfg = cfg_of("128")
    small, large = largest_fitting(cfg, 8 * GIB), largest_fitting(cfg, 80 * GIB)
    assert 8 <= small < large <= 1024 and small % 8 == 0 and large % 8 == 0
    assert estimate_bytes(cfg, small) <= 8 * GIB < estimate_bytes(cfg, 2 * small)
    assert largest_fitting(cfg, 1 * GIB) == 1  # nothing fits: the smallest batch, and the trial step decides

    # a trial step that runs out of memory above 40 faces: halved until one fits, and it says so
    logs.clear()
    b = auto_batch(cfg, torch.device("cpu"), 32, 1, logs.append, fits=lambda n: n <= 40, free_bytes=80 * GIB)
    expect = large
    while expect > 40:
        expect //= 2
    assert b == expect
    assert logs[0].startswith(f"batch_size auto: {b} per identity per process fits 80.0 GiB")
    assert "out of memory at" in logs[0]


def test_trial_step_runs_a_copy() -> None:
    cfg = ModelConfig(32, 4, 4, 8, ("src", "dst"))
    model = build_model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert trial_step(model, cfg, torch.device("cpu"), None)(2) is True
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
