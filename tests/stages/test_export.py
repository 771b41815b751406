"""The export stage under real DVC, after real convert and render stages with a real (fresh) model:
the index traces to render's record and mark, the mark reads back from the exported frames, a
second repro runs nothing, export.enabled false leaves only the off-record, and no consent, no export."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import yaml

from facedag.provenance.watermark import detect_frames
from facedag.records import sha256_file
from facedag.swap.export import folders, read_png
from tests.conftest import VENV_BIN, make_project, tool_env
from tests.swap.test_convert import BLANK_FRAMES, FACE_FRAMES, make_target
from tests.swap.test_render import _stage, _write_project


def _set_params(root: Path, change) -> None:
    data = yaml.safe_load((root / "params.yaml").read_text())
    change(data)
    (root / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def _repro(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "dvc"), "repro", "--single-item", "export"], cwd=root, env=tool_env(),
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def test_export_stage_under_dvc(demo_sources, tmp_path):
    import torch

    from facedag.training.model import ModelConfig, build_model, save_model

    root = make_project(tmp_path / "proj", demo_sources)
    make_target(demo_sources, root / "data" / "target.mp4")
    _write_project(root, root / "data" / "target.mp4", demo_sources, label=True)

    def enable(data):
        data["target"]["uri"] = "data/target.mp4"
        data["export"] = {"enabled": True, "name": "clip"}

    _set_params(root, enable)
    torch.manual_seed(0)
    cfg = ModelConfig(face_size=64, encoder_width=8, decoder_width=8, bottleneck=32, identities=("src", "dst"))
    model = build_model(cfg)
    for name in ("model", "best"):
        save_model(model, cfg, root / "models", {"step": 0}, name=name)
    for stage in ("convert", "render"):
        proc = _stage(stage, root)
        assert proc.returncode == 0, proc.stderr

    first = _repro(root)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Running stage 'export'" in first.stdout
    out = root / "data" / "export"
    record = json.loads((root / "data/render/output.json").read_text())
    index = json.loads((out / "index.json").read_text())
    assert index["enabled"] is True and list(index["videos"]) == ["clip"]
    entry = index["videos"]["clip"]
    assert entry["mark_id"] == record["watermark"]["mark_id"]
    assert entry["target"]["sha256"] == sha256_file(root / "data/target.mp4")
    assert entry["provenance"]["sha256"] == sha256_file(root / "data/render/output.json")
    assert entry["model"]["sha256"] == sha256_file(root / "models/best.safetensors")
    assert entry["swap"] == {"swap_to": "src", "replace": "dst"}
    assert entry["consent"]["target"]["basis"] == "licence" and "src" in entry["consent"]
    assert entry["label"] is False and "cue" in entry["label_reason"]
    assert entry["frames"] == entry["exported"] == FACE_FRAMES + BLANK_FRAMES and entry["fps"] == 25.0
    assert len(entry["swapped_frames"]) >= FACE_FRAMES - 2 and entry["patches"] == len(entry["swapped_frames"])
    assert (out / entry["paths"]["transforms"]).is_file()
    dirs = folders(out, "clip")
    fakes = sorted(dirs["manipulated"].glob("*.png"))
    found = detect_frames(cv2.cvtColor(read_png(p), cv2.COLOR_RGB2GRAY) for p in fakes)
    assert found.found and found.mark_id == entry["mark_id"]

    again = _repro(root)
    assert again.returncode == 0 and "Running stage" not in again.stdout, again.stdout

    _set_params(root, lambda data: data["export"].update(enabled=False))
    off = _repro(root)
    assert off.returncode == 0, off.stdout + off.stderr
    assert sorted(p.name for p in out.iterdir()) == ["index.json"]
    assert json.loads((out / "index.json").read_text())["enabled"] is False

    def no_consent(data):
        data["export"]["enabled"] = True
        del data["target"]["consent"]

    _set_params(root, no_consent)
    refused = _stage("export", root)
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "consent" in lines[0] and "target" in lines[0]
