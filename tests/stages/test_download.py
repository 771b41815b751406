"""`python -m stages.download` as a subprocess over a mixed batch of good and bad sources."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from facedag.records import sha256_file
from facedag.sources.media import probe
from tests import badinputs as bad

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO.parent / "shared" / "samples" / "video_02.mp4"
CONSENT = {"subject": "test", "basis": "self", "evidence": "consent.txt", "evidence_sha256": "0" * 64,
           "scope": "tests"}


def _run(project: Path, sources: list[dict]) -> subprocess.CompletedProcess:
    params = {
        "identities": {"src": {"consent": CONSENT, "sources": sources}},
        "target": {"uri": "none.mp4"},
        "download": {"preset": "ultrafast", "max_side": 1920},
    }
    (project / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "stages.download", "src"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_mixed_batch(tmp_path: Path) -> None:
    inputs = tmp_path / "in put"
    sources, expected = [], {}
    for builder, reason in bad.ALL.values():
        uri = builder(inputs).relative_to(tmp_path).as_posix()
        sources.append({"uri": uri, "licence": "CC0"})
        expected[uri] = reason
    sources.append({"uri": "in put/missing.mp4"})
    expected["in put/missing.mp4"] = "not_found"
    good = bad.good(inputs, "good.mp4", dur=2.0)
    sources.append({"uri": good.as_uri(), "start": 0.5, "end": 1.5, "licence": "CC-BY-4.0"})
    sources.append({"uri": "in put/good.mp4", "start": 2.5})
    expected["in put/good.mp4"] = "empty_cut"
    if SAMPLE.exists():
        sources.append({"uri": str(SAMPLE), "start": 3.0, "end": 6.0, "licence": "CC-BY-2.0"})

    proc = _run(tmp_path, sources)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout

    out = tmp_path / "data" / "download" / "src"
    rejected = {row["item"]: row for row in map(json.loads, (out / "rejected.jsonl").read_text().splitlines())}
    manifest = pd.read_parquet(out / "manifest.parquet")
    kept = set(manifest["uri"])
    for uri, reason in expected.items():
        if reason is None:
            assert uri in kept, f"{uri} should come through: {rejected.get(uri)}"
        else:
            assert rejected[uri]["reason"] == reason, uri
            assert rejected[uri]["stage"] == "download"
    assert set(rejected) == {u for u, r in expected.items() if r}

    for row in manifest.itertuples():
        path = tmp_path / row.path
        assert path.name == f"{row.sha256}.mp4" and path.exists()
        info = probe(path)
        assert info.codec == "h264" and info.pix_fmt == "yuv420p" and info.rotation == 0
        assert info.width % 2 == 0 and info.height % 2 == 0
        assert (row.width, row.height, row.audio) == (info.width, info.height, info.has_audio)
    by_uri = manifest.set_index("uri")
    assert (by_uri.loc["in put/rotated.mp4", "width"], by_uri.loc["in put/rotated.mp4", "height"]) == (120, 160)
    assert not by_uri.loc["in put/silent.mp4", "audio"]
    assert by_uri.loc["in put/silent.mp4", "source_sha256"] == sha256_file(tmp_path / "in put/silent.mp4")
    cut = by_uri.loc[good.as_uri()]
    assert (cut.start, cut.end, cut.licence) == (0.5, 1.5, "CC-BY-4.0") and abs(cut.duration - 1.0) < 0.05
    if SAMPLE.exists():
        sample = by_uri.loc[str(SAMPLE)]
        assert abs(sample.duration - 3.0) < 0.05 and sample.width == 640 and sample.audio
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rejected"] == len(rejected) and metrics["clips"] + metrics["duplicates"] == len(manifest)


def test_all_bad_batch_fails_with_one_line(tmp_path: Path) -> None:
    sources = [{"uri": bad.empty_file(tmp_path).name}, {"uri": bad.audio_only(tmp_path).name}, {"uri": "nope.mp4"}]
    proc = _run(tmp_path, sources)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("download@src: error: no usable clip"), proc.stderr
    assert "Traceback" not in proc.stderr
    rejected = (tmp_path / "data" / "download" / "src" / "rejected.jsonl").read_text().splitlines()
    assert [json.loads(r)["reason"] for r in rejected] == ["empty_file", "no_video_stream", "not_found"]


@pytest.mark.parametrize("bad_params", [{"download": {"max_sid": 3}}])
def test_bad_params_one_line(tmp_path: Path, bad_params: dict) -> None:
    params = {"identities": {"src": {"consent": CONSENT, "sources": [{"uri": "x.mp4"}]}}, "target": {"uri": "t"}}
    params.update(bad_params)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "stages.download", "src"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1 and "max_sid" in proc.stderr
