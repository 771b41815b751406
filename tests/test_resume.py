"""Resume after a kill: the resume folder (keyed, atomic parts), the test-only fault points,
extract resuming per clip and convert per chunk, each equal to an uninterrupted run.

Kills are real (SIGKILL of a real `python` process at a fixed point named by FACEDAG_FAULT);
the detector, ffmpeg, PyAV and parquet are the real ones. convert's swap is the colour
inversion (a deterministic function, as in test_convert.py): what is checked here is the
chunking and the state carried across chunks, not the model.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facedag.params import Convert
from facedag.records import Rejected, StageFailed, sha256_file
from facedag.resume import (
    FAULT_ENV,
    ROOT_ENV,
    ResumeDir,
    fault_point,
    no_space_left,
    resume_root,
    space_guard,
)
from facedag.sources.media import iter_frames
from facedag.swap.convert import FrameResult, convert_video
from tests.conftest import REPO
from tests.stages.test_extract import make_clip, portrait
from tests.stages.test_extract import make_project as make_extract_project
from tests.swap.test_convert import make_target

CFG = Convert(batch=4, policy="largest")  # detector groups of 4 frames; the IoU follower whose state crosses chunks
# (policy identity carries its per-track decisions in the same chunk state; not covered here)
CHUNK = 8  # 35 frames -> 5 chunks; boundaries at 8, 16, 24 fall inside the face's track


def run_python(code_or_args: list[str], cwd: Path, fault: str | None = None, **env: str) -> subprocess.CompletedProcess:
    """`python <args>` with this repository importable and FACEDAG_FAULT set (or not)."""
    full = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", **env)
    full.pop(FAULT_ENV, None)
    if fault:
        full[FAULT_ENV] = fault
    return subprocess.run([sys.executable, *code_or_args], cwd=cwd, env=full, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip


# -- the resume folder --------------------------------------------------------------------------


def test_resume_dir_keeps_parts_for_its_key_only(tmp_path: Path) -> None:
    key = {"params": {"fps": 4}, "inputs": [["a.mp4", "0" * 64]]}
    rd = ResumeDir.open("extract@src", key, root=tmp_path)
    assert rd.path == tmp_path / "extract" / "src"
    rd.put_json("clip-00000.json", {"faces": 3})
    with pytest.raises(RuntimeError), rd.writing("clip-00001.parquet") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert rd.done("clip-00000.json") and not rd.done("clip-00001.parquet")
    assert rd.parts("clip-*") == ["clip-00000.json"]  # no temp file left, none counted

    again = ResumeDir.open("extract@src", json.loads(json.dumps(key)), root=tmp_path)  # same key, new run
    assert again.get_json("clip-00000.json") == {"faces": 3}
    changed = ResumeDir.open("extract@src", {**key, "params": {"fps": 5}}, root=tmp_path)
    assert changed.key != again.key and not changed.done("clip-00000.json")  # a stale part is never reused

    other = ResumeDir.open("extract@dst", key, root=tmp_path)
    other.put_json("x.json", 1)
    changed.clear()
    assert not (tmp_path / "extract" / "src").exists() and other.done("x.json")
    other.clear()
    assert not tmp_path.exists()  # the root too, once empty


def test_resume_root_is_in_dvc_tmp_or_the_temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ROOT_ENV, raising=False)
    (tmp_path / "proj" / ".dvc").mkdir(parents=True)
    assert resume_root(tmp_path / "proj") == (tmp_path / "proj" / ".dvc" / "tmp" / "facedag-resume").resolve()
    plain = resume_root(tmp_path)
    assert plain.name.startswith("facedag-resume-") and plain != resume_root(tmp_path / "proj")
    assert plain == resume_root(tmp_path)  # the same folder again: a rerun by hand resumes too
    monkeypatch.setenv(ROOT_ENV, str(tmp_path / "r"))
    assert resume_root(tmp_path / "proj") == tmp_path / "r"


# -- fault points and disk full -------------------------------------------------------------------


def test_fault_point_kills_at_the_nth_call_only_when_asked(tmp_path: Path) -> None:
    code = ("from facedag.resume import fault_point\n"
            "for i in range(3):\n    print('at', i, flush=True)\n    fault_point('extract@src', 'clip_done')\n"
            "print('survived')\n")  # fmt: skip
    killed = run_python(["-c", code], tmp_path, fault="extract@src:clip_done:2")
    assert killed.returncode == -signal.SIGKILL and killed.stdout.split() == ["at", "0", "at", "1"]
    other = run_python(["-c", code], tmp_path, fault="extract@dst:clip_done:1,convert:frame:1")
    assert other.returncode == 0 and "survived" in other.stdout
    fault_point("extract@src", "clip_done")  # no FACEDAG_FAULT here: nothing happens


def test_replace_fault_kills_with_the_temp_file_whole_but_not_in_place(tmp_path: Path) -> None:
    code = ("import sys\nfrom facedag.resume import arm_faults\nfrom facedag.records import atomic_write_json\n"
            "arm_faults('demo')\n"
            "for name in ('a.json', 'b.json', 'c.json'):\n    atomic_write_json(name, {'name': name})\n"
            "print('survived')\n")  # fmt: skip
    killed = run_python(["-c", code], tmp_path, fault="demo:replace=b*:1")
    assert killed.returncode == -signal.SIGKILL and "survived" not in killed.stdout
    assert json.loads((tmp_path / "a.json").read_text()) == {"name": "a.json"}
    assert not (tmp_path / "b.json").exists() and not (tmp_path / "c.json").exists()
    (temp,) = tmp_path.glob(".b.*.tmp.json")  # the whole file, never moved into place
    assert json.loads(temp.read_text()) == {"name": "b.json"}


def test_no_space_is_told_apart_and_named(tmp_path: Path) -> None:
    assert no_space_left(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    assert no_space_left(Rejected("ffmpeg_failed", "[out#0/matroska] Error closing file: No space left on device"))
    assert not no_space_left(OSError(errno.EACCES, "Permission denied")) and not no_space_left(ValueError("x"))
    with pytest.raises(StageFailed, match=r"^no space left on device while writing .*out\.parquet$"),\
            space_guard(tmp_path / "out.parquet"):  # fmt: skip
        raise OSError(errno.ENOSPC, "Error writing bytes to file")
    with pytest.raises(PermissionError), space_guard(tmp_path / "out.parquet"):
        raise PermissionError(errno.EACCES, "Permission denied")


# -- extract resumes per clip -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def face_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clips") / "face.mp4", portrait(), frames=12)


def test_extract_resumes_per_clip_and_equals_an_uninterrupted_run(tmp_path: Path, face_clip: Path) -> None:
    clips = {"a.mp4": face_clip, "junk.mp4": b"not a video", "b.mp4": face_clip, "c.mp4": face_clip}
    ref = make_extract_project(tmp_path / "ref", clips)
    run = make_extract_project(tmp_path / "run", clips)
    resume = {ROOT_ENV: str(tmp_path / "resume")}
    args = ["-m", "stages.extract", "src"]

    assert run_python(args, ref, **resume).returncode == 0
    killed = run_python(args, run, fault="extract@src:clip_done:2", **resume)  # after a.mp4 and junk.mp4
    assert killed.returncode == -signal.SIGKILL
    assert not (run / "data/extract/src/faces.parquet").exists()
    parts = sorted(p.name for p in (tmp_path / "resume/extract/src").iterdir())
    assert parts == ["clip-00000.json", "clip-00000.parquet", "clip-00001.json", "clip-00001.parquet", "key.json"]
    killed = run_python(args, run, fault="extract@src:clip_done:1", **resume)  # b.mp4 done, c.mp4 not
    assert killed.returncode == -signal.SIGKILL and "resuming: 2 of 4 clips done" in killed.stdout

    done = run_python(args, run, **resume)
    assert done.returncode == 0, done.stderr
    assert "resuming: 3 of 4 clips done" in done.stdout
    for name in ("faces.parquet", "rejected.jsonl", "metrics.json"):
        assert sha256_file(run / "data/extract/src" / name) == sha256_file(ref / "data/extract/src" / name), name
    import pandas as pd

    faces = pd.read_parquet(run / "data/extract/src/faces.parquet")
    assert faces.groupby("clip")["track"].unique().map(list).to_dict() == {"a.mp4": [0], "b.mp4": [1], "c.mp4": [2]}
    assert not (tmp_path / "resume" / "extract").exists()  # cleared once the outputs are in place


# -- convert resumes per chunk --------------------------------------------------------------------

DRIVER = """
import sys
from facedag.swap.convert import convert_video
from facedag.params import Convert
from facedag.resume import ResumeDir

target, out, root = sys.argv[1:4]
resume = ResumeDir.open("convert", {"target": target, "test": "resume"}, root=root)
seen = []
convert_video(target, out + ".mkv", lambda faces: 255 - faces, 64, Convert(batch=4, policy="largest"),
              table=out + ".parquet", on_frame=lambda r: seen.append(r.index), resume=resume, chunk_frames=8)
print("converted frames", seen[0], "to", seen[-1])
"""


@pytest.fixture(scope="module")
def target(demo_sources: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_target(demo_sources, tmp_path_factory.mktemp("resume-convert") / "target.mp4", audio=False)


def invert(faces: np.ndarray) -> np.ndarray:
    return 255 - faces


@pytest.fixture(scope="module")
def reference(target: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[FrameResult]]:
    """An uninterrupted run in chunks of CHUNK frames: ref.mkv, ref.parquet and its FrameResults."""
    out = tmp_path_factory.mktemp("reference")
    results: list[FrameResult] = []
    stats = convert_video(target, out / "ref.mkv", invert, 64, CFG, table=out / "ref.parquet",
                          on_frame=results.append, chunk_frames=CHUNK)  # fmt: skip
    assert stats.frames == 35 and stats.frames_swapped >= 23
    assert sorted(p.name for p in out.iterdir()) == ["ref.mkv", "ref.parquet"]  # the temp chunks are gone
    return out, results


def test_chunk_boundaries_do_not_change_the_output(target: Path, reference, tmp_path: Path) -> None:
    ref, ref_results = reference
    one: list[FrameResult] = []
    convert_video(target, tmp_path / "one.mkv", invert, 64, CFG, table=tmp_path / "one.parquet",
                  on_frame=one.append, chunk_frames=1000)  # fmt: skip
    assert [(r.index, r.faces, r.mask_area, r.bbox) for r in one] == [(r.index, r.faces, r.mask_area, r.bbox)
                                                                      for r in ref_results]  # fmt: skip
    assert sha256_file(tmp_path / "one.mkv") == sha256_file(ref / "ref.mkv")
    assert sha256_file(tmp_path / "one.parquet") == sha256_file(ref / "ref.parquet")


def test_convert_killed_twice_resumes_and_equals_an_uninterrupted_run(target: Path, reference, tmp_path: Path) -> None:
    ref, _ = reference
    (tmp_path / "driver.py").write_text(DRIVER)
    args = ["driver.py", str(target), str(tmp_path / "out"), str(tmp_path / "resume")]
    chunks = tmp_path / "resume" / "convert"

    killed = run_python(args, tmp_path, fault="convert:chunk_done:2")
    assert killed.returncode == -signal.SIGKILL
    assert sorted(p.name for p in chunks.glob("chunk-*.json")) == ["chunk-000000.json", "chunk-000001.json"]
    record = json.loads((chunks / "chunk-000001.json").read_text())
    assert record["first_frame"] == 8 and record["next_frame"] == 16 and not record["end"]
    (track,) = record["follower"]["tracks"]  # one face followed across the boundary...
    assert record["follower"]["followed"] == track[0] and record["follower"]["next_id"] == 1
    (smoothed,) = record["smoother"]["filters"]  # ...with its One Euro state (float64, exact in JSON)
    assert np.asarray(smoothed[1]).shape == (5, 2) and smoothed[3] == pytest.approx(15 / 25)

    killed = run_python(args, tmp_path, fault="convert:frame:5")  # in the middle of chunk 2 (frames 16-23)
    assert killed.returncode == -signal.SIGKILL
    assert "resuming: 2 of ~5 chunks done (frames 0-15)" in killed.stdout
    assert not (chunks / "chunk-000002.json").exists() and list(chunks.glob(".chunk-000002.*.tmp.mkv"))
    assert not (tmp_path / "out.mkv").exists()

    done = run_python(args, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "resuming: 2 of ~5 chunks done" in done.stdout and "converted frames 16 to 34" in done.stdout
    assert json.loads((chunks / "chunk-000004.json").read_text())["end"] is True
    assert sha256_file(tmp_path / "out.mkv") == sha256_file(ref / "ref.mkv")
    assert sha256_file(tmp_path / "out.parquet") == sha256_file(ref / "ref.parquet")
    decoded = [(f.index, f.time, f.image) for f in iter_frames(tmp_path / "out.mkv")]
    expected = [(f.index, f.time, f.image) for f in iter_frames(ref / "ref.mkv")]
    assert len(decoded) == len(expected) == 35
    for (i, t, a), (j, u, b) in zip(decoded, expected, strict=True):
        assert (i, t) == (j, u) and np.array_equal(a, b)
