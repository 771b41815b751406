"""output.json: the right sha256s, consent, label choice, params hash and code version."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from facedag.params import Consent, Identity, Params, Render, Source, Target
from facedag.provenance.record import build_record, params_sha256

CONSENT = Consent(subject="someone", basis="licence", evidence="https://example.org/licence",
                  evidence_sha256="ab" * 32, scope="tests")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _project(root: Path, label: bool = True) -> Params:
    for ident, payload in (("src", b"src clip"), ("dst", b"dst clip")):
        clip = root / "data" / "download" / ident / "clips" / "c.mp4"
        clip.parent.mkdir(parents=True)
        clip.write_bytes(payload)
        manifest = pd.DataFrame({"uri": [f"https://example.org/{ident}.mp4"], "sha256": [_sha(clip)],
                                 "path": [f"data/download/{ident}/clips/c.mp4"], "licence": ["CC-BY-2.0"],
                                 "start": [1.5], "end": [float("nan")]})  # fmt: skip
        manifest.to_parquet(clip.parent.parent / "manifest.parquet")
    (root / "target.mp4").write_bytes(b"target bytes")
    (root / "out.mp4").write_bytes(b"output bytes")
    (root / "models").mkdir()
    (root / "models" / "model.safetensors").write_bytes(b"weights")
    (root / "models" / "model.json").write_text('{"config": {"face_size": 64}, "step": 7}')
    return Params(
        identities={i: Identity(consent=CONSENT, sources=[Source(uri=f"https://x.org/{i}")]) for i in ("src", "dst")},
        target=Target(uri=str(root / "target.mp4"), consent=CONSENT),
        render=Render(label=label),
    )


def test_record_lists_the_right_hashes_and_choices(tmp_path):
    params = _project(tmp_path, label=False)
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    rec = build_record(params, output=tmp_path / "out.mp4", target=tmp_path / "target.mp4",
                       model=tmp_path / "models" / "model.safetensors", download_dir=tmp_path / "data" / "download",
                       root=tmp_path, now=when)  # fmt: skip
    assert rec["synthetic"] is True
    assert rec["output"]["sha256"] == _sha(tmp_path / "out.mp4")
    assert rec["target"]["sha256"] == _sha(tmp_path / "target.mp4")
    assert rec["model"]["sha256"] == _sha(tmp_path / "models" / "model.safetensors")
    assert rec["model"]["step"] == 7 and rec["model"]["config"] == {"face_size": 64}
    for ident in ("src", "dst"):
        (row,) = rec["sources"][ident]
        assert row["sha256"] == _sha(tmp_path / "data" / "download" / ident / "clips" / "c.mp4")
        assert row["start"] == 1.5 and row["end"] is None and row["licence"] == "CC-BY-2.0"
    assert rec["consent"]["src"]["subject"] == "someone" and rec["consent"]["target"]["basis"] == "licence"
    assert rec["label"]["visible"] is False and rec["label"]["turned_off_by"] == "render.label: false in params.yaml"
    assert rec["params_sha256"] == params_sha256(params)
    assert rec["created"] == "2026-01-02T03:04:05+00:00"
    assert rec["code"]["facedag"] and "git_commit" in rec["code"]
    assert rec["swap"] == {"swap_to": "src", "replace": "dst"}


def test_label_on_is_recorded_and_params_hash_tracks_params(tmp_path):
    params = _project(tmp_path)
    rec = build_record(params, output=tmp_path / "out.mp4", target=tmp_path / "target.mp4", model=None,
                       download_dir=tmp_path / "data" / "download", root=tmp_path)  # fmt: skip
    assert rec["label"]["visible"] is True and rec["label"]["text"] == "AI-generated"
    assert "turned_off_by" not in rec["label"]
    changed = params.model_copy(update={"render": Render(crf=30)})
    assert params_sha256(changed) != params_sha256(params)
    assert params_sha256(params.model_copy()) == params_sha256(params)


def test_a_clip_that_changed_since_download_is_refused(tmp_path):
    params = _project(tmp_path)
    (tmp_path / "data" / "download" / "src" / "clips" / "c.mp4").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="does not match"):
        build_record(params, output=tmp_path / "out.mp4", target=tmp_path / "target.mp4", model=None,
                     download_dir=tmp_path / "data" / "download", root=tmp_path)  # fmt: skip
