"""Grouping tracks by identity and choosing the person's tracks, on real faces from the
sample footage (video_01.mp4: five people) and on planted embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from facedag.faces.identity_groups import choose_tracks, group_sheet, group_tracks
from tests.stages.test_extract import SAMPLES

VIDEO = SAMPLES / "video_01.mp4"


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def record(vectors: list[np.ndarray], faces: int, size: float = 50.0) -> dict:
    return {"faces": faces, "size": size, "embeddings": [v.tolist() for v in vectors], "thumb": None}


def test_grouping_joins_the_same_person_and_numbers_by_faces() -> None:
    rng = np.random.default_rng(0)
    a, b = unit(rng.normal(size=128)), unit(rng.normal(size=128))
    near = [unit(a + 0.3 * rng.normal(size=128) / np.sqrt(128)) for _ in range(3)]
    ids = [near[0], unit(b), near[1], near[2]]
    labels = group_tracks(ids, [5, 50, 5, 5], threshold=0.363)
    assert labels == [2, 1, 2, 2]  # b has most faces, so it is group 1


def test_choose_tracks_modes() -> None:
    rng = np.random.default_rng(1)
    people = [unit(rng.normal(size=128)) for _ in range(3)]
    tracks = {0: record([people[0]], 10), 1: record([people[1]], 30), 2: record([people[0]], 25),
              3: record([people[2]], 5), 4: record([], 3)}  # fmt: skip
    largest = choose_tracks(tracks, 0.363)
    assert largest.kept == {0, 2} and largest.report["mode"] == "largest_group"  # 35 faces beat 30
    assert [g["faces"] for g in largest.report["groups"]] == [35, 30, 5]
    assert largest.report["tracks"]["4"]["group"] is None and not largest.report["tracks"]["4"]["kept"]
    ref = choose_tracks(tracks, 0.363, reference=np.stack([people[2]]))
    assert ref.kept == {3} and ref.similarity[3] == pytest.approx(1.0, abs=1e-5)
    assert choose_tracks(tracks, 0.363, group=2).kept == {1}
    with pytest.raises(ValueError, match="group:7"):
        choose_tracks(tracks, 0.363, group=7)
    sheet = group_sheet(largest.report, tracks)
    assert sheet.ndim == 3 and sheet.shape[0] > 3 * 80


@pytest.mark.skipif(not VIDEO.exists(), reason="../shared/samples/video_01.mp4 is absent")
def test_five_people_make_five_groups() -> None:
    from facedag.faces.detect import FaceDetector, FaceFollower, follow_faces
    from facedag.faces.identity import Embedder
    from facedag.faces.identity_groups import TrackSampler
    from facedag.sources.media import iter_frames

    sampler = TrackSampler(interval=0.5, per_track=4)
    follower = FaceFollower("all", 0.3, 1.0)
    for frame, chosen in follow_faces(iter_frames(VIDEO, fps=10), FaceDetector(min_size=20), follower, 8):
        for det, track in chosen:
            sampler.add(track, frame.time, frame.image, det.landmarks, det.size)
    tracks = {int(t): r for t, r in sampler.finish(Embedder()).items()}
    assert all(1 <= len(r["embeddings"]) <= 4 and r["thumb"] for r in tracks.values())
    choice = choose_tracks(tracks, 0.363)
    assert len(choice.report["groups"]) == 5
    # the kept group is the one with most faces, not the one with the biggest box
    sizes = [g["faces"] for g in choice.report["groups"]]
    assert choice.report["groups"][0]["kept"] and sizes == sorted(sizes, reverse=True)
