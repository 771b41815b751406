"""The planted occluder: a striped bar (a texture training never saw) moves across the lower face
of the demo target; a small model trained with synthetic occluders converts it. With the
learned mask at least 90 % of the bar's pixels come out unchanged while the face around it is
swapped; with the five-point hull the bar is painted over.

Real everything: the demo clip through ffmpeg, RetinaFace and the mesh, a model trained by the
training loop (deterministic, benchmarks/bench_occluder.py's recipe), FFV1 through PyAV."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.bench_occluder import FRAMES, kept_share, planted_clip, train_model

STEPS = 400  # about 2 minutes of training on a loaded 2-core CPU


@pytest.fixture(scope="module")
def planted(demo_sources: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("occluder")
    clip, bars, faces = planted_clip(demo_sources, out)
    return clip, bars, faces, train_model(out / "train", STEPS), out


def test_the_learned_mask_keeps_the_occluder_and_the_hull_paints_it(planted) -> None:
    clip, bars, faces, models, out = planted
    assert sum(bool(b.any()) for b in bars) >= FRAMES - 2  # the bar was planted on (nearly) every frame
    kept_l, changed_l, swapped_l, _ = kept_share(clip, bars, faces, models, "learned", out / "learned.mkv")
    kept_h, changed_h, swapped_h, _ = kept_share(clip, bars, faces, models, "hull", out / "hull.mkv")
    assert swapped_l >= FRAMES - 2 and swapped_h >= FRAMES - 2
    assert changed_h > 0.5 and changed_l > 0.5  # both swap the face around the bar
    assert kept_l >= 0.90, f"learned kept {kept_l:.1%} of the occluder"
    assert kept_h < 0.2, f"hull kept {kept_h:.1%} of the occluder"
