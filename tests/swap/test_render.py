"""render and the convert/render stages on real footage: frames, duration, audio, label, tags,
provenance, and a hostile label that must be drawn literally and run nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import yaml

from facedag.params import Convert, Render
from facedag.records import sha256_file
from facedag.sources.demo import write_evidence
from facedag.sources.media import ffmpeg_exe, ffmpeg_input, iter_frames, probe
from facedag.swap.convert import convert_video
from facedag.swap.render import SYNTHETIC_NOTE, label_geometry, read_tags, render_video
from tests.swap.test_convert import invert, make_target

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def converted(demo_sources: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("render")
    target = make_target(demo_sources, d / "target.mp4")
    results: list = []
    convert_video(target, d / "frames.mkv", invert, 64, Convert(), on_frame=results.append, keep_alpha=True)
    return {"dir": d, "target": target, "frames": d / "frames.mkv", "alpha": [r.alpha for r in results]}


def _label_box(cfg: Render, w: int, h: int) -> tuple[slice, slice]:
    g = label_geometry(cfg, h)
    bh = g["fontsize"] * 2 + 2 * g["border"]
    bw = min(w, g["fontsize"] * len(cfg.label_text))
    return slice(h - bh - g["margin"], h), slice(w - bw - g["margin"], w)


def test_render_keeps_frames_duration_audio_and_the_unmasked_pixels(converted, tmp_path):
    out = tmp_path / "plain.mp4"
    info = render_video(converted["frames"], converted["target"], out, Render(label=False, crf=16, preset="veryfast"))
    assert info["label"] is False and info["audio"] == "copy"
    tgt, res = probe(converted["target"]), probe(out)
    assert res.codec == "h264" and res.pix_fmt == "yuv420p" and res.has_audio
    assert res.frames == tgt.frames and abs(res.duration - tgt.duration) < 1e-3
    src = [f.image for f in iter_frames(converted["target"])]
    got = [f.image for f in iter_frames(out)]
    assert len(got) == len(src)
    changed = 0
    for a, b, alpha in zip(src, got, converted["alpha"], strict=True):
        diff = np.abs(a.astype(int) - b.astype(int))
        outside = alpha == 0
        # a pixel or two beside the mask bleeds through chroma subsampling: look 4 px away
        far = np.ones_like(outside)
        ys, xs = np.nonzero(~outside)
        if ys.size:
            far[max(0, ys.min() - 4) : ys.max() + 5, max(0, xs.min() - 4) : xs.max() + 5] = False
        assert diff[far & outside].mean() < 3.0  # codec tolerance, plus the invisible mark (1-3 levels)
        inside = alpha > 0.9
        if inside.any():
            assert diff[inside].mean() > 40
            changed += 1
    assert changed >= 20


def test_label_and_synthetic_tags(converted, tmp_path):
    on, off = tmp_path / "on.mp4", tmp_path / "off.mp4"
    # the same mark id: the invisible mark is then the same in both, and only the label differs
    render_video(converted["frames"], converted["target"], on, Render(preset="ultrafast"), mark_id="0123456789ab")
    render_video(converted["frames"], converted["target"], off, Render(label=False, preset="ultrafast"),
                 mark_id="0123456789ab")
    a = next(iter_frames(on)).image.astype(int)
    b = next(iter_frames(off)).image.astype(int)
    ys, xs = _label_box(Render(), a.shape[1], a.shape[0])
    assert np.abs(a[ys, xs] - b[ys, xs]).mean() > 10  # the label is there
    assert np.abs(a[:200, :300] - b[:200, :300]).mean() < 1  # and nowhere else
    tags = read_tags(on)
    note = SYNTHETIC_NOTE.format(record="output.json")
    assert tags["comment"] == note and tags["description"] == note
    assert tags["synthetic"] == "1" and tags["provenance"] == "output.json"


def test_target_without_audio_renders_without_audio(demo_sources, tmp_path):
    target = make_target(demo_sources, tmp_path / "silent.mp4", audio=False)
    convert_video(target, tmp_path / "f.mkv", invert, 64, Convert())
    info = render_video(tmp_path / "f.mkv", target, tmp_path / "o.mp4", Render(preset="ultrafast"))
    assert info["audio"] is None and not probe(tmp_path / "o.mp4").has_audio


def test_hostile_label_is_drawn_literally_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flat = tmp_path / "flat.mkv"  # 10 identical frames: a literal label draws the same pixels on each
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "lavfi", "-i", "color=c=gray:s=320x240:r=10:d=1",
                    "-c:v", "ffv1", ffmpeg_input(flat)], check=True, timeout=60)  # fmt: skip
    hostile = "it's \"q\": 100% %{pts} %{n} %{eif:n:d} $(touch pwned) `touch pwned2` \\ \\n ; , [x] '\nline2: ok"
    cfg = Render(label_text=hostile, label_size=0.06, label_position="top-left", preset="ultrafast", crf=0)
    render_video(flat, flat, tmp_path / "o.mp4", cfg)
    render_video(flat, flat, tmp_path / "plain.mp4", Render(label=False, preset="ultrafast"))
    frames = [f.image.astype(int) for f in iter_frames(tmp_path / "o.mp4")]
    plain = next(iter_frames(tmp_path / "plain.mp4")).image.astype(int)
    assert len(frames) == 10
    g = label_geometry(cfg, 240)
    line = g["fontsize"] + 2
    first, second = slice(g["margin"], g["margin"] + line), slice(g["margin"] + line, g["margin"] + 2 * line)
    assert np.abs(frames[0][first] - plain[first]).mean() > 5  # drawn, on two lines (the newline is kept)
    assert np.abs(frames[0][second, :60] - plain[second, :60]).mean() > 5
    for f in frames[1:]:  # %{pts}, %{n} were not expanded: every frame shows the same text
        # crf 0 is lossless; the invisible mark changes sign from frame to frame by 1-2 luma levels
        assert np.abs(f - frames[0]).max() <= 4
    assert not list(tmp_path.rglob("pwned*")) and not (REPO / "pwned").exists()


def _write_project(root: Path, target: Path, demo: Path, label: bool = True, target_consent: bool = True) -> None:
    import pandas as pd

    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["base"]["face_size"] = 64
    data["device"] = "cpu"
    data["target"] = {"uri": str(target), "licence": "public-domain"}
    if target_consent:
        data["target"]["consent"] = data["identities"]["dst"]["consent"]
    data["render"] = {"label": label, "preset": "ultrafast"}
    (root / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    write_evidence(root / "data" / "demo")  # the consent records' evidence
    for ident, clip in (("src", "src.mp4"), ("dst", "dst.mp4")):  # what download would have stored
        clips = root / "data" / "download" / ident / "clips"
        clips.mkdir(parents=True, exist_ok=True)
        sha = sha256_file(demo / clip)
        (clips / f"{sha}.mp4").write_bytes((demo / clip).read_bytes())
        pd.DataFrame({"source": [0], "uri": [f"data/demo/{clip}"], "sha256": [sha],
                      "path": [f"data/download/{ident}/clips/{sha}.mp4"], "licence": ["public-domain"],
                      "start": [None], "end": [None]}).to_parquet(clips.parent / "manifest.parquet")  # fmt: skip


def _stage(name: str, root: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", f"stages.{name}"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


def test_stages_with_a_real_model(demo_sources, tmp_path):
    """A freshly initialised FaceSwapModel, saved with save_model, through both stages."""
    import torch

    from facedag.training.model import ModelConfig, build_model, save_model

    root = tmp_path / "proj"
    root.mkdir()
    target = make_target(demo_sources, tmp_path / "target.mp4")
    _write_project(root, target, demo_sources, label=False)
    torch.manual_seed(0)
    cfg = ModelConfig(face_size=64, encoder_width=8, decoder_width=8, bottleneck=32, identities=("src", "dst"))
    model = build_model(cfg)
    save_model(model, cfg, root / "models", {"step": 0})
    save_model(model, cfg, root / "models", {"step": 0}, name="best")  # what convert paints with by default

    conv = _stage("convert", root)
    assert conv.returncode == 0, conv.stderr
    metrics = json.loads((root / "data/convert/metrics.json").read_text())
    assert metrics["frames"] == probe(target).frames and metrics["frames_swapped"] > 20
    rend = _stage("render", root)
    assert rend.returncode == 0, rend.stderr
    out = root / "data/render/output.mp4"
    res, tgt = probe(out), probe(target)
    assert res.frames == tgt.frames and abs(res.duration - tgt.duration) < 1e-3 and res.has_audio
    with av.open(str(out)) as c:
        assert c.metadata["synthetic"] == "1"
    record = json.loads((root / "data/render/output.json").read_text())
    assert record["synthetic"] is True
    assert record["output"]["sha256"] == sha256_file(out)
    assert record["target"]["sha256"] == sha256_file(target)
    assert record["model"]["sha256"] == sha256_file(root / "models/best.safetensors")
    assert record["model"]["config"]["face_size"] == 64
    assert record["sources"]["src"][0]["sha256"] == sha256_file(demo_sources / "src.mp4")
    assert record["sources"]["dst"][0]["sha256"] == sha256_file(demo_sources / "dst.mp4")
    assert record["label"] == {"visible": False, "text": None, "turned_off_by": "render.label: false in params.yaml"}
    assert record["consent"]["target"]["basis"] == "licence"


def test_convert_stops_without_the_targets_consent(demo_sources, tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    _write_project(root, tmp_path / "missing.mp4", demo_sources, target_consent=False)
    proc = _stage("convert", root)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "target" in lines[0] and "consent" in lines[0]
