"""The report's identity parts from real outputs: extract's identity groups of the five-person
sample (run here as the stage would, through facedag.faces.identity_groups), a target's groups,
and evaluate_video's per-frame identity columns; and notes, not failures, when they are missing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from facedag.records import atomic_write_bytes
from facedag.report import identity as who
from facedag.report.html import Images, Report, build_page
from facedag.tables import encode_image
from tests.stages.test_extract import SAMPLES

VIDEO = SAMPLES / "video_01.mp4"


def groups_of_sample(folder: Path) -> None:
    from facedag.faces.detect import FaceDetector, FaceFollower, follow_faces
    from facedag.faces.identity import Embedder
    from facedag.faces.identity_groups import TrackSampler, choose_tracks, group_sheet
    from facedag.sources.media import iter_frames

    sampler = TrackSampler(0.5, 3)
    for frame, chosen in follow_faces(iter_frames(VIDEO, fps=4), FaceDetector(min_size=20),
                                      FaceFollower("all", 0.3, 1.0), 8):  # fmt: skip
        for det, track in chosen:
            sampler.add(track, frame.time, frame.image, det.landmarks, det.size)
    tracks = {int(t): r for t, r in sampler.finish(Embedder()).items()}
    report = choose_tracks(tracks, 0.363).report
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "identity.json").write_text(json.dumps(report))
    atomic_write_bytes(folder / "identity.png", encode_image(group_sheet(report, tracks), "png"))


@pytest.mark.skipif(not VIDEO.exists(), reason="../shared/samples/video_01.mp4 is absent")
def test_identity_sections_show_groups_sheets_and_the_curve(tmp_path: Path) -> None:
    root = tmp_path / "run"
    groups_of_sample(root / "data/extract/src")
    groups_of_sample(root / "data/convert")
    video = root / "data/evaluate/video"
    video.mkdir(parents=True)
    n = 40
    pd.DataFrame({"frame": np.arange(n), "swapped": 1, "id_src": np.linspace(0.2, 0.7, n),
                  "id_dst": np.linspace(0.5, 0.1, n), "id_retrieved": (np.arange(n) > 12).astype(int)}
                 ).to_parquet(video / "frames.parquet")  # fmt: skip
    (video / "metrics.json").write_text(json.dumps({"id_retrieval": 0.68, "id_margin": 0.1, "id_frames": n}))
    rep = Report(root, Images(tmp_path / "out" / "images"), tmp_path / "out")
    html = who.identity_groups(rep, "src")
    assert "5 identity group(s)" in html and "identities.src.reference: group:N" in html and html.count("<img") == 1
    assert "the group with most faces" in html
    assert "target.reference: group:N" in who.target_identity(rep)
    curve = who.identity_curve(rep)
    assert "id_retrieval 0.68 " in curve and curve.count("<img") == 1
    assert len(list((tmp_path / "out" / "images").iterdir())) == 3


def test_missing_identity_outputs_are_notes(tmp_path: Path) -> None:
    page, failed = build_page(tmp_path, ["src"], None, Images(None), tmp_path / "out")
    assert not failed
    assert "run extract@src" in page and "run convert" in page and "run evaluate_video" in page
    rep = Report(tmp_path, Images(None), tmp_path / "out")
    folder = tmp_path / "data/extract/src"
    folder.mkdir(parents=True)
    (folder / "identity.json").write_text(json.dumps({"mode": "policy:largest", "groups": []}))
    assert "No identity groups: policy:largest" in who.identity_groups(rep, "src")
