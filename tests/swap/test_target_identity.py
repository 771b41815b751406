"""convert replaces the person the reference names, in real five-person footage
(../shared/samples/video_01.mp4): a reference crop of one guest, the swap (here: a colour
inversion standing for the model) lands on that guest's face in every swapped frame and on
nobody else's; without a reference the largest identity group is replaced."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facedag.faces.identity import Embedder
from facedag.params import Convert
from facedag.swap.convert import FrameResult, convert_video
from facedag.swap.target_identity import TargetPerson, find_target_person
from tests.stages.test_extract_identity import VIDEO, reference_crop

pytestmark = pytest.mark.skipif(not VIDEO.exists(), reason="../shared/samples/video_01.mp4 is absent")
CFG = Convert(policy="identity", min_size=20, batch=8)


def invert(faces: np.ndarray) -> np.ndarray:
    return 255 - faces


def test_reference_picks_the_guest_and_only_their_face_is_swapped(tmp_path: Path) -> None:
    crop, (cx, cy) = reference_crop(tmp_path)
    embedder = Embedder()
    person, report, sheet = find_target_person(VIDEO, CFG, str(crop), embedder)
    assert report["mode"] == "reference" and len(report["groups"]) == 5
    assert sum(g["kept"] for g in report["groups"]) == 1 and sheet.shape[0] > 5 * 80
    results: list[FrameResult] = []
    stats = convert_video(VIDEO, tmp_path / "out.mkv", invert, 64, CFG, on_frame=results.append, person=person)
    assert stats.frames == 90 and stats.frames_swapped > 80
    assert all(r.faces <= 1 for r in results)  # one person in each frame, never the other four
    centres = np.array([((r.bbox[0] + r.bbox[2]) / 2, (r.bbox[1] + r.bbox[3]) / 2) for r in results if r.swapped])
    assert np.median(np.hypot(centres[:, 0] - cx, centres[:, 1] - cy)) < 40
    decided = person.state()["decided"]
    assert sum(s >= CFG.identity_threshold for _, s in decided) >= 1 and len(decided) >= 5
    again = TargetPerson(person.centre, person.threshold, embedder)
    again.load(person.state())
    assert again.decided == person.decided


def test_without_reference_the_largest_group_is_replaced(tmp_path: Path) -> None:
    results: list[FrameResult] = []
    stats = convert_video(VIDEO, tmp_path / "out.mkv", invert, 64, CFG, on_frame=results.append)
    assert stats.frames_swapped > 80 and all(r.faces <= 1 for r in results)
    assert len({r.track for r in results if r.swapped}) <= 2
