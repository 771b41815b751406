"""extract@ID as `python -m stages.extract src` in a temp project: a short clip built here
from a still portrait (moved with cv2, encoded by ffmpeg), bad clips beside it, and the
640x480 sample footage when present."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO.parent / "shared" / "samples"

FACES_COLUMNS = {
    "face": pa.string(),
    "clip": pa.string(),
    "frame": pa.int32(),
    "time": pa.float64(),
    "frame_width": pa.int32(),
    "frame_height": pa.int32(),
    "track": pa.int32(),
    "score": pa.float32(),
    "bbox": pa.list_(pa.float32(), 4),
    "landmarks": pa.list_(pa.float32(), 10),
    "crop": pa.binary(),
    "crop_matrix": pa.list_(pa.float64(), 6),
}
EXTRACT_METRICS = {"frames_sampled", "frames_with_face", "faces", "clips", "clips_rejected", "tracks"}


def portrait() -> np.ndarray:
    from skimage.data import astronaut

    return np.ascontiguousarray(astronaut())


def make_clip(path: Path, image: np.ndarray | None, frames: int = 24, size=(320, 240), fps: int = 12) -> Path:
    """A short H.264 clip: `image` drifting, zooming and rolling a little (or a plain gradient)."""
    from facedag.sources.media import ffmpeg_exe

    w, h = size
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{w}x{h}", "-r", str(fps), "-i", "-", "-c:v", "libx264", "-preset", "ultrafast",
           "-pix_fmt", "yuv420p", str(path)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    for i in range(frames):
        if image is None:
            frame = np.zeros((h, w, 3), np.uint8)
            frame[:] = np.linspace(30, 220, w, dtype=np.uint8)[None, :, None]
        else:
            s = 0.55 + 0.004 * i
            m = cv2.getRotationMatrix2D((image.shape[1] / 2, image.shape[0] / 3), 4 * math_sin(i / 5), s)
            m[:, 2] += (w / 2 - image.shape[1] / 2 + 3 * i - 30, h / 2 - image.shape[0] / 3)
            frame = cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
        proc.stdin.write(np.ascontiguousarray(frame).tobytes())
    proc.stdin.close()
    assert proc.wait(60) == 0
    return path


def math_sin(x: float) -> float:
    import math

    return math.sin(x)


def make_project(root: Path, clips: dict[str, Path | bytes | None], identity: str = "src", **params) -> Path:
    """A project dir with params.yaml and data/trim/<identity>/{clips, selection.parquet}."""
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data.setdefault("base", {})["face_size"] = 64
    for section, values in params.items():
        data.setdefault(section, {}).update(values)
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    clip_dir = root / "data" / "trim" / identity / "clips"
    clip_dir.mkdir(parents=True, exist_ok=True)
    for name, src in clips.items():
        if isinstance(src, Path):
            (clip_dir / name).symlink_to(src.resolve())
        elif isinstance(src, bytes):
            (clip_dir / name).write_bytes(src)
    n = len(clips)
    pd.DataFrame(
        {"shot": [f"s{i}" for i in range(n)], "clip": list(clips), "start": [0.0] * n, "end": [1.0] * n,
         "score": [1.0] * n, "kept": [True] * n}
    ).to_parquet(root / "data" / "trim" / identity / "selection.parquet")  # fmt: skip
    return root


def run_stage(root: Path, stage: str, identity: str = "src") -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", f"stages.{stage}", identity], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip


def rejected(root: Path, stage: str, identity: str = "src") -> dict[str, str]:
    path = root / "data" / stage / identity / "rejected.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert all(r["stage"] == stage and r["message"] for r in rows)
    return {r["item"]: r["reason"] for r in rows}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {"face": make_clip(d / "face.mp4", portrait()), "empty": make_clip(d / "empty.mp4", None, frames=12)}


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory, clips: dict[str, Path]) -> Path:
    """extract@src over: a face clip, a clip without faces, random bytes, a missing file."""
    root = make_project(
        tmp_path_factory.mktemp("proj"),
        {"a face.mp4": clips["face"], "no_face.mp4": clips["empty"], "-bad.mp4": os.urandom(4096), "gone.mp4": None},
    )
    proc = run_stage(root, "extract")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    return root


def test_extract_metrics_and_rejections(extracted: Path) -> None:
    metrics = json.loads((extracted / "data" / "extract" / "src" / "metrics.json").read_text())
    assert set(metrics) >= EXTRACT_METRICS
    assert metrics["frames_sampled"] == 24 + 12
    assert 20 <= metrics["frames_with_face"] <= 24 and metrics["faces"] == metrics["frames_with_face"]
    assert metrics["clips"] == 1 and metrics["clips_rejected"] == 3 and metrics["tracks"] == 1
    assert rejected(extracted, "extract") == {
        "no_face.mp4": "no_face", "-bad.mp4": "not_a_video", "gone.mp4": "not_found",
    }  # fmt: skip


def test_faces_table_columns_and_content(extracted: Path) -> None:
    path = extracted / "data" / "extract" / "src" / "faces.parquet"
    schema = pq.read_schema(path)
    assert {name: schema.field(name).type for name in schema.names} == FACES_COLUMNS
    table = pd.read_parquet(path)
    assert (table["clip"] == "a face.mp4").all() and table["face"].is_unique
    assert table["frame"].is_monotonic_increasing and (np.diff(table["time"]) > 0).all()
    assert (table[["frame_width", "frame_height"]] == (320, 240)).all().all()
    assert table["track"].nunique() == 1 and (table["score"] >= 0.8).all()
    from facedag.faces.align import transform_points

    for row in table.itertuples():
        crop = cv2.imdecode(np.frombuffer(row.crop, np.uint8), cv2.IMREAD_COLOR)
        assert crop is not None and crop.shape[0] == crop.shape[1] <= 96  # 1.5 x face_size 64
        lm = np.asarray(row.landmarks, dtype=np.float64).reshape(5, 2)
        x0, y0, x1, y1 = row.bbox
        assert (lm[:, 0] > x0).all() and (lm[:, 0] < x1).all() and (lm[:, 1] > y0).all() and (lm[:, 1] < y1).all()
        in_crop = transform_points(lm, np.asarray(row.crop_matrix).reshape(2, 3))
        assert (in_crop > 0).all() and (in_crop < crop.shape[0]).all()


def test_extract_fails_in_one_line_without_faces(tmp_path: Path, clips: dict[str, Path]) -> None:
    root = make_project(tmp_path, {"no_face.mp4": clips["empty"], "junk.mp4": b"not a video"})
    proc = run_stage(root, "extract")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("extract@src: error:") and "no face" in lines[0]
    assert not (root / "data" / "extract" / "src" / "faces.parquet").exists()
    assert rejected(root, "extract") == {"no_face.mp4": "no_face", "junk.mp4": "not_a_video"}


def test_extract_policy_all_and_fps(tmp_path: Path, clips: dict[str, Path]) -> None:
    root = make_project(tmp_path, {"face.mp4": clips["face"]}, extract={"fps": 4, "policy": "all"})
    proc = run_stage(root, "extract")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((root / "data" / "extract" / "src" / "metrics.json").read_text())
    assert metrics["frames_sampled"] == 8  # 2 s at 4 fps
    table = pd.read_parquet(root / "data" / "extract" / "src" / "faces.parquet")
    assert np.allclose(np.diff(table["time"]), 0.25, atol=1 / 12 + 1e-6)


@pytest.mark.skipif(not (SAMPLES / "video_02.mp4").exists(), reason="../shared/samples/video_02.mp4 is absent")
def test_extract_on_sample_footage(tmp_path: Path) -> None:
    root = make_project(tmp_path, {"video_02.mp4": SAMPLES / "video_02.mp4"}, extract={"fps": 3})
    proc = run_stage(root, "extract")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((root / "data" / "extract" / "src" / "metrics.json").read_text())
    assert metrics["frames_sampled"] == pytest.approx(17.4 * 3, abs=2)
    # the hikers are near enough for a face in about 40 % of the frames
    assert metrics["faces"] == metrics["frames_with_face"] > 0.15 * metrics["frames_sampled"]
    assert metrics["tracks"] >= 1
    schema = pq.read_schema(root / "data" / "extract" / "src" / "faces.parquet")
    assert {name: schema.field(name).type for name in schema.names} == FACES_COLUMNS
