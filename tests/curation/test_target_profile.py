"""The target's face distribution: measured on the demo target, matched to grids, weights toward
it, and the gap lines, computed exactly on planted counts; and profile@ID as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from facedag.curation.coverage import pose_light_grid, trim_grid
from facedag.curation.shots import Candidate, select_shots
from facedag.curation.target_profile import (
    SAMPLE_COLUMNS,
    TargetProfile,
    cell_weights,
    coverage,
    gap_metrics,
    gap_report,
    gaps,
    load_profile,
    log_lines,
    not_applicable,
    target_regions,
    target_shares,
)
from facedag.curation.target_scan import profile_target
from facedag.params import Convert
from facedag.records import Rejected, atomic_write_json
from tests.conftest import REPO, tool_env


def planted(rows: list[tuple[int, dict[str, float]]], identity: str = "src") -> TargetProfile:
    """A profile of `n` faces with the given features, for each (n, features) of `rows`."""
    recs = [{"time": 0.0, "roll": 0.0, "mouth_open": 0.0, "eyes_open": 1.0, "luminance": 0.5, "asymmetry": 0.0,
             **features} for n, features in rows for _ in range(n)]
    samples = pd.DataFrame(recs, columns=list(SAMPLE_COLUMNS)).astype("float64")
    return TargetProfile(identity=identity, applies=True, target="t.mp4", fps=4.0, duration=len(recs) / 4,
                         frames_sampled=len(recs), samples=samples)


def faces(rows: list[tuple[int, dict[str, float]]]) -> pd.DataFrame:
    """A training face table: n faces for each (n, features)."""
    recs = [{"yaw": 0.0, "pitch": 0.0, "luminance": 0.5, "asymmetry": 0.0, **f} for n, f in rows for _ in range(n)]
    return pd.DataFrame(recs)


def test_profile_of_the_demo_target(demo_sources, tmp_path):
    profile = profile_target(demo_sources / "target.mp4", "src", Convert(), face_size=64, fps=4)
    assert profile.applies and profile.complete and profile.stopped == ""
    assert profile.frames_sampled == 24  # 6 s at 4 fps
    assert profile.faces >= 20  # the demo's face is in (nearly) every frame
    assert profile.samples["time"].is_monotonic_increasing
    assert (profile.samples["yaw"].abs() < 45).all() and (profile.samples["pitch"].abs() < 40).all()
    assert profile.samples["luminance"].between(0.1, 0.9).all()
    shares = target_shares(profile, pose_light_grid())
    assert shares.sum() == pytest.approx(1.0) and (shares > 0).sum() >= 2

    data = profile.to_dict()
    hist = data["histogram"]
    assert sum(c["count"] for c in hist["cells"]) == profile.faces
    assert sum(c["share"] for c in hist["cells"]) == pytest.approx(1.0, abs=1e-3)
    for column, marginal in hist["marginals"].items():
        assert sum(marginal["counts"]) == profile.faces, column
        assert len(marginal["edges"]) == len(marginal["counts"]) + 1
    # the JSON file round-trips (rounded to 4 decimals)
    atomic_write_json(tmp_path / "target.json", data)
    back = load_profile(tmp_path / "target.json")
    assert back is not None and back.faces == profile.faces and back.frames_sampled == 24
    assert np.allclose(back.samples["yaw"], profile.samples["yaw"], atol=1e-4)
    assert (target_shares(back, pose_light_grid()) == shares).all()

    # a long target is sampled more sparsely: at most max_samples frames
    sparse = profile_target(demo_sources / "target.mp4", "src", Convert(), face_size=64, fps=4, max_samples=6)
    assert sparse.fps == pytest.approx(1.0) and sparse.frames_sampled == 6


def test_a_target_that_is_not_a_video_is_rejected(tmp_path):
    bad = tmp_path / "target.mp4"
    bad.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(Rejected) as info:
        profile_target(bad, "src")
    assert info.value.reason == "not_a_video"
    assert load_profile(tmp_path / "absent.json") is None
    (tmp_path / "old.json").write_text('{"version": 0}')
    with pytest.raises(ValueError, match="is not a target profile"):
        load_profile(tmp_path / "old.json")


def test_gap_lines_on_planted_counts():
    # 100 target faces: 18 at yaw 35 (the bin 25.7..42.9), 82 frontal; all mid-lit and looking ahead
    profile = planted([(18, {"yaw": 35.0, "pitch": 0.0}), (82, {"yaw": 0.0, "pitch": 0.0})])
    kept = faces([(2, {"yaw": 35.0}), (50, {"yaw": 0.0})])
    before = faces([(7, {"yaw": 35.0}), (90, {"yaw": 0.0})])
    grid = pose_light_grid()
    found = gaps(profile, grid, kept, before, min_faces=10)
    assert [g.line("src", "before dedupe") for g in found] == [
        "the target has 18 % of its frames at yaw 26..43 deg; src has 2 faces there (7 before dedupe)",
    ]
    assert (found[0].target_faces, found[0].src_faces, found[0].src_faces_in) == (18, 2, 7)
    assert found[0].target_share == pytest.approx(0.18)
    # the same faces, enough of them: no gap; a region under 5 % of the target is never a gap
    assert gaps(profile, grid, kept, before, min_faces=2) == []
    small = planted([(4, {"yaw": 35.0}), (96, {"yaw": 0.0})])
    assert gaps(small, grid, faces([(50, {"yaw": 0.0})]), min_faces=10) == []
    assert coverage(profile, grid, kept) == pytest.approx(1.0)
    assert coverage(profile, grid, faces([(50, {"yaw": 0.0})])) == pytest.approx(0.82)
    assert coverage(profile, grid, kept, min_faces=3) == pytest.approx(0.82)


def test_pose_cells_are_gaps_only_where_their_yaw_and_pitch_are_not():
    # the target looks up at yaw 35 and ahead at yaw 0; src has both yaws and both pitches, never together
    profile = planted([(30, {"yaw": 35.0, "pitch": 30.0}), (70, {"yaw": 0.0, "pitch": 0.0})])
    src = faces([(20, {"yaw": 35.0, "pitch": 0.0}), (20, {"yaw": 0.0, "pitch": 30.0}), (20, {})])
    lines = [g.line() for g in gaps(profile, pose_light_grid(), src, min_faces=10)]
    assert lines == ["the target has 30 % of its frames at yaw 26..43 deg, pitch >= 24 deg (looking up); "
                     "src has 0 faces there"]
    # without any face at yaw 35, the yaw bin is the gap and its pose cells are not repeated
    src = faces([(20, {"yaw": 0.0, "pitch": 30.0}), (20, {})])
    lines = [g.line() for g in gaps(profile, pose_light_grid(), src, min_faces=10)]
    assert lines == ["the target has 30 % of its frames at yaw 26..43 deg; src has 0 faces there"]
    # lighting regions read as such
    dark = planted([(10, {"luminance": 0.3, "asymmetry": 0.2})])
    lines = [g.line() for g in gaps(dark, pose_light_grid(), faces([(20, {})]), min_faces=10)]
    assert lines == ["the target has 100 % of its frames with luminance < 0.4 (dark); src has 0 faces there",
                     "the target has 100 % of its frames with light asymmetry >= 0.1 (lit from the image left); "
                     "src has 0 faces there"]


def test_cell_weights_favour_the_targets_pose_and_lighting():
    grid = pose_light_grid()
    profile = planted([(30, {"yaw": 35.0}), (10, {"yaw": 0.0})])
    assert cell_weights(profile, grid, 0.0) is None
    assert cell_weights(None, grid, 1.0) is None
    assert cell_weights(not_applicable("dst", "src"), grid, 1.0) is None
    assert cell_weights(planted([]), grid, 1.0) is None  # a target without a face

    w = cell_weights(profile, grid, 2.0)
    cell = {name: int(grid.cells(faces([(1, f)]))[0]) for name, f in
            (("turned", {"yaw": 35.0}), ("front", {}), ("turned_dark", {"yaw": 35.0, "luminance": 0.3}),
             ("away", {"yaw": -50.0, "luminance": 0.3}))}
    # pose: 2 occupied cells, shares 0.75 and 0.25; lighting: 1 occupied cell, share 1; their product
    assert w[cell["turned"]] == pytest.approx((1 + 2.0 * 2 * 0.75) * (1 + 2.0 * 1 * 1.0))
    assert w[cell["front"]] == pytest.approx((1 + 2.0 * 2 * 0.25) * (1 + 2.0))
    assert w[cell["turned_dark"]] == pytest.approx(1 + 2.0 * 2 * 0.75)
    assert w[cell["away"]] == 1.0
    assert w.min() == 1.0 and w.shape == (grid.size,)
    # trim's grid also cuts expression: cells that differ only in expression weigh the same
    tw = cell_weights(profile, trim_grid(), 2.0)
    t = trim_grid().cells(faces([(1, {"yaw": 35.0, "mouth_open": m, "eyes_open": e}) for m in (0.0, 0.3)
                                 for e in (0.2, 0.9)]))
    assert len(set(t.tolist())) == 4 and np.allclose(tw[t], w[cell["turned"]])


def test_target_regions_name_the_target_cells_each_face_covers():
    grid = pose_light_grid()
    profile = planted([(30, {"yaw": 35.0}), (10, {"yaw": 0.0})])  # all at luminance 0.5
    table = faces([(1, {"yaw": 35.0}), (1, {}), (1, {"yaw": -50.0, "luminance": 0.3}), (1, {"yaw": 35.0,
                                                                                            "luminance": 0.9})])
    turned, front, away, turned_bright = target_regions(profile, grid, table)
    assert {k for k, _ in turned} == {0, 1} and {k for k, _ in front} == {0, 1}
    assert turned != front and (turned & front) == {r for r in turned if r[0] == 1}  # same light, other pose
    assert away == frozenset()  # neither the target's pose nor its light
    assert {k for k, _ in turned_bright} == {0} and turned_bright < turned
    assert target_regions(None, grid, table) is None
    assert target_regions(not_applicable("dst", "src"), grid, table) is None


def test_weighted_shot_selection_prefers_the_shots_of_the_targets_poses():
    grid = trim_grid()
    # two brightly lit frontal cells, and one cell where the target is (pose and lighting)
    varied = grid.cells(faces([(1, {"yaw": 0.0, "luminance": 0.7}), (1, {"pitch": 20.0, "luminance": 0.7})]))
    turned = grid.cells(faces([(2, {"yaw": 35.0})]))
    cands = [Candidate(key="varied", duration=1.0, cells=varied), Candidate(key="turned", duration=1.0, cells=turned)]
    kept = [c.key for c, p in zip(cands, select_shots(cands, 1.0, 0.05), strict=True) if p.kept]
    assert kept == ["varied"]  # two new cells beat one
    weights = cell_weights(planted([(10, {"yaw": 35.0})]), grid, 2.0)
    picks = select_shots(cands, 1.0, 0.05, weights)
    assert [c.key for c, p in zip(cands, picks, strict=True) if p.kept] == ["turned"]
    assert picks[1].gain == pytest.approx((1 + 2.0) * (1 + 2.0) + 0.05 * 2) and picks[1].new_cells == 1


def test_gap_report_and_log_lines():
    profile = planted([(18, {"yaw": 35.0}), (82, {})])
    report = gap_report(profile, pose_light_grid(), faces([(2, {"yaw": 35.0}), (50, {})]),
                        faces([(7, {"yaw": 35.0}), (90, {})]), identity="src", stage="dedupe", target_weight=1.0,
                        min_faces=10, before="before dedupe")
    assert report["weighted"] is True and report["target_faces"] == 100
    assert report["coverage"] == 1.0 and report["coverage_in"] == 1.0 and report["coverage_light"] == 1.0
    assert [g["line"] for g in report["gaps"]] == report["lines"] and len(report["lines"]) == 1
    assert report["gaps"][0]["bins"] == {"yaw": 5} and report["gaps"][0]["src_faces_in"] == 7
    assert {r["kind"] for r in report["regions"]} == {"yaw", "pitch", "luminance", "asymmetry"}
    assert sum(r["target_faces"] for r in report["regions"] if r["kind"] == "yaw") == 100
    json.dumps(report)  # what the stage writes as target_gaps.json
    assert gap_metrics(report) == {"target_weighted": True, "target_faces": 100, "target_coverage": 1.0,
                                   "target_coverage_in": 1.0, "target_coverage_light": 1.0, "target_gaps": 1}
    head, *rest = log_lines(report, "dedupe@src", "before dedupe")
    assert head == ("dedupe@src: target: 100 faces in 100 sampled frames, weighted 1; 100 % of its frames have a "
                    "src face in their pose cell (100 % before dedupe), 100 % in their lighting cell; 1 gap(s)")
    assert rest == [f"dedupe@src: target gap: {report['lines'][0]}"]
    # no profile, or another identity's: not weighted, and said so in one line
    for prof, note in ((None, "no target profile"), (not_applicable("dst", "src"), "only convert.swap_to (src)")):
        report = gap_report(prof, pose_light_grid(), faces([(5, {})]), None, identity="dst", stage="dedupe",
                            target_weight=1.0, min_faces=10)
        assert report["weighted"] is False and report["gaps"] == [] and report["coverage"] is None
        assert gap_metrics(report) == {"target_weighted": False, "target_faces": 0, "target_gaps": 0}
        assert len(log_lines(report, "dedupe@dst")) == 1 and note in log_lines(report, "dedupe@dst")[0]


def run_profile_stage(root, identity, target):
    params = {"identities": {n: {"sources": [{"uri": "x.mp4"}]} for n in ("src", "dst")},
              "target": {"uri": str(target)}, "base": {"face_size": 64}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    env = tool_env()
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "stages.profile", identity], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


def test_profile_stage(tmp_path, demo_sources):
    proc = run_profile_stage(tmp_path, "src", demo_sources / "target.mp4")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "data/profile/src"
    profile = load_profile(out / "target.json")
    assert profile is not None and profile.active and profile.faces >= 20
    assert json.loads((out / "metrics.json").read_text()) == {"applies": True, "complete": True,
                                                              "faces": profile.faces, "frames_sampled": 24}
    assert (out / "rejected.jsonl").read_text() == ""
    assert f"profile@src: {profile.faces} faces to replace in 24 frames" in proc.stdout

    # another identity: a profile that does not apply, made without reading the target (absent here)
    proc = run_profile_stage(tmp_path, "dst", tmp_path / "no-such-target.mp4")
    assert proc.returncode == 0, proc.stderr
    dst = load_profile(tmp_path / "data/profile/dst/target.json")
    assert dst is not None and not dst.applies and dst.faces == 0
    assert "only convert.swap_to (src) is curated toward the target" in proc.stdout

    # an unreadable target does not stop the data half: an empty profile, the reason recorded
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00garbage" * 100)
    proc = run_profile_stage(tmp_path, "src", bad)
    assert proc.returncode == 0, proc.stderr
    assert "warning: the target cannot be read" in proc.stderr and "curate unweighted" in proc.stderr
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert [(r["item"], r["reason"], r["stage"]) for r in rejected] == [(str(bad), "not_a_video", "profile")]
    empty = load_profile(out / "target.json")
    assert empty is not None and empty.applies and not empty.active and not empty.complete

