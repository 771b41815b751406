"""Identity figures of a video (id_retrieval, id_margin) on planted videos made of real footage.

video_01.mp4 shows five people. Person A plays `src`, person B `dst`. Their mean faces come
from a dedupe-style table of A's and B's aligned faces (every 10th frame). The "target" is the
footage itself with convert's mask over B: an output that is the target untouched must score
id_retrieval 0 for src; the same footage with the mask over A (what a perfect swap to A would
show where the mask is) must score close to 1."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from facedag.faces.identity import Embedder
from facedag.quality.evaluate_video import evaluate_video
from facedag.quality.identity import IdentityScorer, dataset_centre, identity_centres
from tests.stages.test_extract import SAMPLES

VIDEO = SAMPLES / "video_01.mp4"
pytestmark = pytest.mark.skipif(not VIDEO.exists(), reason="../shared/samples/video_01.mp4 is absent")


@pytest.fixture(scope="module")
def footage() -> dict:
    """Frames, per-frame boxes of the two largest people's tracks, and their aligned faces."""
    from facedag.faces.align import align_face, aligned_matrix
    from facedag.faces.detect import FaceDetector, FaceFollower, follow_faces
    from facedag.sources.media import iter_frames
    from facedag.tables import encode_image

    frames, boxes, rows = [], [], {}
    follower = FaceFollower("all", 0.3, 1.0)
    for frame, chosen in follow_faces(iter_frames(VIDEO), FaceDetector(min_size=20), follower, 8):
        frames.append(frame.image)
        boxes.append({t: d.bbox for d, t in chosen})
        if frame.index % 10 == 0:
            for d, t in chosen:
                m = aligned_matrix(d.landmarks, 64)
                rows.setdefault(t, []).append({"image": encode_image(align_face(frame.image, m, 64)),
                                               "landmarks": d.landmarks.reshape(-1).tolist(),
                                               "matrix": m.reshape(-1).tolist()})  # fmt: skip
    a, b = sorted(rows, key=lambda t: -len(rows[t]))[:2]
    return {"frames": frames, "boxes": boxes, "a": a, "b": b, "rows": rows}


def mask_over(footage: dict, track: int) -> list[np.ndarray | None]:
    h, w = footage["frames"][0].shape[:2]
    out = []
    for box in footage["boxes"]:
        if track not in box:
            out.append(None)
            continue
        x0, y0, x1, y1 = (round(v) for v in box[track])
        m = np.zeros((h, w), np.uint8)
        m[max(0, y0) : y1, max(0, x0) : x1] = 255
        out.append(m)
    return out


@pytest.fixture(scope="module")
def scorer_parts(footage: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Embedder]:
    root = tmp_path_factory.mktemp("dedupe")
    schema = pa.schema([("image", pa.binary()), ("landmarks", pa.list_(pa.float32(), 10)),
                        ("matrix", pa.list_(pa.float64(), 6))])  # fmt: skip
    for name, track in (("src", footage["a"]), ("dst", footage["b"])):
        (root / name).mkdir()
        pq.write_table(pa.Table.from_pylist(footage["rows"][track], schema=schema), root / name / "dataset.parquet")
    embedder = Embedder()
    centres = identity_centres(root, ["src", "dst", "missing"], embedder)
    assert set(centres) == {"src", "dst"}
    assert dataset_centre(root / "missing" / "dataset.parquet", embedder) is None
    assert float(centres["src"] @ centres["dst"]) < 0.363
    return centres, embedder


def score(footage: dict, scorer_parts: tuple[dict, Embedder], output_track: int) -> tuple[dict, list[dict]]:
    from facedag.faces.detect import FaceDetector

    centres, embedder = scorer_parts
    scorer = IdentityScorer(centres, "src", "dst", embedder)
    frames = footage["frames"]
    return evaluate_video(iter(frames), iter(frames), iter(mask_over(footage, output_track)),
                          FaceDetector(min_size=20), batch=8, identity=scorer)  # fmt: skip


def test_untouched_target_scores_zero(footage: dict, scorer_parts: tuple[dict, Embedder]) -> None:
    summary, rows = score(footage, scorer_parts, footage["b"])
    assert summary["id_frames"] > 60
    assert summary["id_retrieval"] == 0.0
    assert summary["id_margin"] < -0.3
    scored = [r for r in rows if "id_retrieved" in r]
    assert len(scored) == summary["id_frames"] and all(r["id_dst"] > r["id_src"] for r in scored)


def test_src_own_footage_scores_close_to_one(footage: dict, scorer_parts: tuple[dict, Embedder]) -> None:
    summary, _ = score(footage, scorer_parts, footage["a"])
    assert summary["id_frames"] > 60
    assert summary["id_retrieval"] >= 0.95
    assert summary["id_margin"] > 0.3


def test_scorer_needs_src(scorer_parts: tuple[dict, Embedder]) -> None:
    centres, embedder = scorer_parts
    with pytest.raises(ValueError, match="'other'"):
        IdentityScorer(centres, "other", "dst", embedder)
