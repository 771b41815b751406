"""trim@ID as a subprocess on the demo clips plus bad ones, with tiny params."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from facedag.curation.target_profile import not_applicable
from facedag.records import atomic_write_json
from facedag.sources.media import probe, run_ffmpeg
from tests.conftest import REPO, tool_env
from tests.curation.test_target_profile import planted as planted_target

PARAMS = {
    "base": {"face_size": 64},
    "identities": {"src": {"consent": {"subject": "test", "basis": "licence", "evidence": "licence.txt",
                                       "evidence_sha256": "0" * 64, "scope": "tests"}, "sources": [{"uri": "x.mp4"}]}},
    "target": {"uri": "t.mp4"},
    "trim": {"max_seconds": 3, "sample_fps": 2, "max_shot_seconds": 1.5},
}


def make_download(root, clips):
    """data/download/src/{clips/, manifest.parquet} as the download stage writes them."""
    clip_dir = root / "data/download/src/clips"
    clip_dir.mkdir(parents=True)
    rows = []
    for uri, sha, src in clips:
        path = clip_dir / f"{sha}.mp4"
        if not path.exists():
            if isinstance(src, bytes):
                path.write_bytes(src)
            else:
                shutil.copy2(src, path)
        rows.append({"source": len(rows), "uri": uri, "sha256": sha, "path": path.relative_to(root).as_posix(),
                     "duplicate": any(r["sha256"] == sha for r in rows)})
    pd.DataFrame(rows).to_parquet(root / "data/download/src/manifest.parquet")


def run_stage(root, params):
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    env = tool_env()
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "stages.trim", "src"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def faceless(tmp_path_factory):
    out = tmp_path_factory.mktemp("faceless") / "bars.mp4"
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=s=320x240:r=25:d=2", "-pix_fmt", "yuv420p", "-c:v", "libx264",
                "-preset", "ultrafast", str(out)])
    return out


def test_trim_keeps_varied_shots_within_budget_and_rejects_bad_clips(tmp_path, demo_sources, faceless):
    make_download(tmp_path, [
        ("demo/src.mp4", "a" * 64, demo_sources / "src.mp4"),
        ("demo/src-again.mp4", "a" * 64, demo_sources / "src.mp4"),  # same clip from two sources
        ("bars.mp4", "b" * 64, faceless),
        ("noise.mp4", "c" * 64, b"\x00\x01garbage" * 300),
    ])
    proc = run_stage(tmp_path, PARAMS)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout

    out = tmp_path / "data/trim/src"
    sel = pd.read_parquet(out / "selection.parquet")
    assert {"shot", "source", "start", "end", "score", "kept", "clip", "reason", "rank"} <= set(sel.columns)
    assert set(sel["sha256"]) == {"a" * 64}  # the duplicate row scanned once, bad clips have no shots
    assert sel["shot"].is_unique
    assert (sel["duration"] <= 1.5 + 1e-6).all()  # long shots split into segments
    kept = sel[sel["kept"]]
    assert 0 < kept["duration"].sum() <= 3.0 + 1e-6
    assert (sel.loc[~sel["kept"], "reason"] != "").all() and (kept["reason"] == "").all()
    assert sorted(kept["rank"]) == list(range(1, len(kept) + 1))
    assert set(sel.loc[~sel["kept"], "reason"]) <= {"over_budget", "no_face", "too_short"}
    for row in kept.itertuples():
        info = probe(out / "clips" / row.clip)
        assert info.duration == pytest.approx(row.duration, abs=0.1)
    assert sorted(p.name for p in (out / "clips").iterdir()) == sorted(kept["clip"])

    rejected = {r["item"]: r["reason"] for r in map(json.loads, (out / "rejected.jsonl").read_text().splitlines())}
    assert rejected == {"bars.mp4": "no_face", "noise.mp4": "not_a_video"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["clips_in"] == 4 and metrics["clips_used"] == 1 and metrics["clips_rejected"] == 2
    assert metrics["seconds_kept"] <= 3.0 and metrics["seconds_in"] == pytest.approx(6.0, abs=0.1)
    assert 0 < metrics["cells_covered_kept"] <= metrics["cells_covered_in"]
    png = (out / "coverage.png").read_bytes()
    assert png[:4] == b"\x89PNG" and len(png) > 10_000


def test_trim_fails_in_one_line_when_no_clip_is_usable(tmp_path, faceless):
    make_download(tmp_path, [("bars.mp4", "b" * 64, faceless), ("empty.mp4", "e" * 64, b"")])
    proc = run_stage(tmp_path, PARAMS)
    assert proc.returncode == 1
    assert proc.stderr.startswith("trim@src: error: no shot kept") and proc.stderr.strip().count("\n") == 0
    rejected = [json.loads(line) for line in (tmp_path / "data/trim/src/rejected.jsonl").read_text().splitlines()]
    assert {r["reason"] for r in rejected} == {"no_face", "empty_file"}


def test_trim_weights_toward_the_target_and_reports_its_gaps(tmp_path, demo_sources):
    make_download(tmp_path, [("demo/src.mp4", "a" * 64, demo_sources / "src.mp4")])
    profile_dir = tmp_path / "data/profile/src"
    profile_dir.mkdir(parents=True)
    # another identity's profile: unweighted, and the log says why
    atomic_write_json(profile_dir / "target.json", not_applicable("src", "dst").to_dict())
    proc = run_stage(tmp_path, PARAMS)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "data/trim/src"
    assert "trim@src: target: only convert.swap_to (dst) is curated toward the target" in proc.stdout
    plain = pd.read_parquet(out / "selection.parquet")
    assert json.loads((out / "metrics.json").read_text())["target_weighted"] is False

    # the target: half frontal and lit like the demo's src (from the image left), half at yaw 35, which src never shows
    light = {"luminance": 0.7, "asymmetry": 0.17}
    profile = planted_target([(10, {"yaw": 0.0, "pitch": 0.0, **light}), (10, {"yaw": 35.0, "pitch": 0.0, **light})])
    atomic_write_json(profile_dir / "target.json", profile.to_dict())
    proc = run_stage(tmp_path, PARAMS)
    assert proc.returncode == 0, proc.stderr
    weighted = pd.read_parquet(out / "selection.parquet")
    # the shots of the target's lighting gain more per new cell than unweighted
    assert weighted.loc[weighted["kept"], "gain"].sum() > plain.loc[plain["kept"], "gain"].sum()
    report = json.loads((out / "target_gaps.json").read_text())
    assert report["weighted"] is True and report["stage"] == "trim" and report["min_faces"] == 2
    line = "the target has 50 % of its frames at yaw 26..43 deg; src has 0 sampled faces there"
    assert line in report["lines"] and f"trim@src: target gap: {line}" in proc.stderr
    assert not any("yaw 26..43 deg, pitch" in g for g in report["lines"])  # the yaw gap is not repeated per pitch
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["target_weighted"] is True and metrics["target_gaps"] == len(report["gaps"])
    assert 0 < metrics["target_coverage"] <= 0.5 and metrics["target_coverage_in"] <= 0.5
