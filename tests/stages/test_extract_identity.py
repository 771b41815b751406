"""extract@ID picks a person by who they are: `python -m stages.extract src` on the real
five-person sample footage (../shared/samples/video_01.mp4), with a reference crop of one of them
cut from a frame, and with `group:N` of the footage's own identity groups."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from tests.stages.test_extract import SAMPLES, make_project, rejected, run_stage

VIDEO = SAMPLES / "video_01.mp4"
pytestmark = pytest.mark.skipif(not VIDEO.exists(), reason="../shared/samples/video_01.mp4 is absent")
EXTRACT = {"fps": 10, "min_size": 20, "policy": "identity"}


def reference_crop(folder: Path) -> tuple[Path, tuple[float, float]]:
    """A PNG crop of the second-largest face of the frame at 2 s (not the face `largest` would
    follow), and that face's centre in frame px."""
    from facedag.faces.detect import FaceDetector
    from facedag.sources.media import iter_frames

    frame = next(iter_frames(VIDEO, start=2.0)).image
    dets = sorted(FaceDetector(min_size=20).detect(frame), key=lambda d: -d.area)
    assert len(dets) == 5, "the sample shows five people"
    face = dets[1]
    x0, y0, x1, y1 = face.bbox
    pad = 0.5 * face.width
    crop = frame[max(0, int(y0 - pad)) : int(y1 + pad), max(0, int(x0 - pad)) : int(x1 + pad)]
    path = folder / "who.png"
    cv2.imwrite(str(path), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    return path, face.center


@pytest.fixture(scope="module")
def by_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[float, float]]:
    folder = tmp_path_factory.mktemp("ref")
    crop, centre = reference_crop(folder)
    root = make_project(folder / "proj", {"video_01.mp4": VIDEO}, extract=EXTRACT)
    params = root / "params.yaml"
    data = __import__("yaml").safe_load(params.read_text())
    data["identities"]["src"]["reference"] = str(crop)
    params.write_text(__import__("yaml").safe_dump(data, sort_keys=False))
    proc = run_stage(root, "extract")
    assert proc.returncode == 0, proc.stderr
    return root, centre


def test_reference_keeps_only_that_person(by_reference: tuple[Path, tuple[float, float]]) -> None:
    root, (cx, cy) = by_reference
    out = root / "data" / "extract" / "src"
    faces = pd.read_parquet(out / "faces.parquet")
    assert faces["track"].nunique() == 1
    # the kept faces are where the reference person is (the camera moves a little)
    centres = np.array([((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in faces["bbox"]])
    assert np.median(np.hypot(centres[:, 0] - cx, centres[:, 1] - cy)) < 40
    report = json.loads((out / "identity.json").read_text())
    assert report["mode"] == "reference" and report["kept_tracks"] == [int(faces["track"].iloc[0])]
    # five people, five groups (a small face whose track broke in two is one group)
    assert len(report["groups"]) == 5 and sum(g["kept"] for g in report["groups"]) == 1
    others = {f"video_01.mp4#track{t}" for t in report["tracks"] if int(t) not in report["kept_tracks"]}
    assert len(others) >= 4 and rejected(root, "extract") == dict.fromkeys(others, "other_identity")
    sims = {int(t): v["similarity"] for t, v in report["tracks"].items()}
    kept = report["kept_tracks"][0]
    assert sims[kept] > 0.6 and max(v for t, v in sims.items() if t != kept) < 0.363
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tracks"] == 1 and metrics["tracks_other_identity"] == len(others)
    assert metrics["identity_groups"] == 5
    assert metrics["faces"] == len(faces) and metrics["faces_other_identity"] > 3 * len(faces)
    sheet = cv2.imread(str(out / "identity.png"))
    assert sheet is not None and sheet.shape[0] > 5 * 80


def test_group_reference_keeps_that_group(by_reference: tuple[Path, tuple[float, float]], tmp_path: Path) -> None:
    import yaml

    first = json.loads((by_reference[0] / "data" / "extract" / "src" / "identity.json").read_text())
    group = next(g for g in first["groups"] if first["kept_tracks"][0] in g["tracks"])
    root = make_project(tmp_path, {"video_01.mp4": VIDEO}, extract=EXTRACT)
    data = yaml.safe_load((root / "params.yaml").read_text())
    data["identities"]["src"]["reference"] = f"group:{group['group']}"
    (root / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    proc = run_stage(root, "extract")
    assert proc.returncode == 0, proc.stderr
    faces = pd.read_parquet(root / "data" / "extract" / "src" / "faces.parquet")
    assert sorted(faces["track"].unique().tolist()) == group["tracks"]
    # a group that does not exist fails in one line naming the key
    data["identities"]["src"]["reference"] = "group:9"
    (root / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    proc = run_stage(root, "extract")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "identities.src.reference" in lines[0] and "group:9" in lines[0]


def test_a_reference_nobody_matches_fails_and_keeps_the_work(tmp_path: Path) -> None:
    """Someone who is not in the footage: one line, no faces.parquet; the clips' parts stay, so
    the run with a corrected reference resumes instead of detecting again."""
    import yaml

    from tests.faces.test_identity import portraits

    stranger = tmp_path / "stranger.png"
    cv2.imwrite(str(stranger), cv2.cvtColor(portraits()["astronaut"], cv2.COLOR_RGB2BGR))
    root = make_project(tmp_path / "p", {"video_01.mp4": VIDEO}, extract=EXTRACT)
    data = yaml.safe_load((root / "params.yaml").read_text())
    data["identities"]["src"]["reference"] = str(stranger)
    (root / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    proc = run_stage(root, "extract")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "matches identities.src.reference" in lines[0]
    assert not (root / "data/extract/src/faces.parquet").exists()
    assert set(rejected(root, "extract").values()) == {"other_identity"}
    data["identities"]["src"]["reference"] = "group:1"
    (root / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    proc = run_stage(root, "extract")
    assert proc.returncode == 0, proc.stderr
    assert "resuming: 1 of 1 clips done" in proc.stdout
    assert len(pd.read_parquet(root / "data/extract/src/faces.parquet")) > 0
