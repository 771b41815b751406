"""The demo sources: built offline, the right shape, with audio, and a face in (nearly) every frame."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from facedag.sources import demo
from facedag.sources.media import iter_frames, probe


@pytest.fixture(scope="module")
def clips(demo_sources: Path) -> Path:
    return demo_sources


@pytest.mark.parametrize("name", [r.name for r in demo.RECIPES])
def test_demo_clip_shape(clips: Path, name: str) -> None:
    info = probe(clips / f"{name}.mp4")
    assert (info.width, info.height, info.fps) == (640, 480, 25.0)
    assert abs(info.duration - 6.0) < 0.1 and info.has_audio and info.audio_codec == "aac"
    assert info.codec == "h264" and info.pix_fmt == "yuv420p"


@pytest.mark.parametrize("name", [r.name for r in demo.RECIPES])
def test_demo_faces_found(clips: Path, name: str) -> None:
    from retinaface import detect_faces

    frames = list(iter_frames(clips / f"{name}.mp4", fps=2.5))
    assert len(frames) == 15
    batch = np.stack([f.image for f in frames])
    found = [[f for f in faces if f.score > 0.8] for faces in detect_faces(batch, score_threshold=0.5)]
    hits = [max(found_i, key=lambda f: f.width * f.height) for found_i in found if found_i]
    assert len(hits) >= 14, f"faces in {len(hits)}/15 sampled frames"
    assert min(min(f.width, f.height) for f in hits) >= 100 and max(f.height for f in hits) >= 120


def test_demo_has_shot_cuts(clips: Path) -> None:
    """Hard cuts: the frame-to-frame change at a shot boundary is far above the change inside a shot."""
    frames = [f.image.astype(np.float32) for f in iter_frames(clips / "src.mp4")]
    change = np.array([np.abs(b - a).mean() for a, b in itertools.pairwise(frames)])
    top = np.argsort(change)[-2:]
    assert sorted(top + 1) == [50, 100]
    assert change[top].min() > 3 * np.median(change)


def test_demo_rebuild_is_skipped_and_deterministic(clips: Path, tmp_path: Path) -> None:
    recipe = demo.RECIPES[0]
    path, rebuilt = demo.build(recipe, clips)
    assert path == clips / "src.mp4" and rebuilt is False
    short = demo.Recipe("tiny", "astronaut", seed=1, tone_hz=300, seconds=0.4)
    a, _ = demo.build(short, tmp_path / "a")
    b, _ = demo.build(short, tmp_path / "b")
    assert a.read_bytes() == b.read_bytes()
    assert (tmp_path / "a" / "tiny.json").exists()
