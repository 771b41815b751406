"""A full disk: one clear line ("no space left on device while writing <path>"), a non-zero
exit, the previous files and finished parts intact, no temp file left, and the run after space
is freed resumes.

Two ways to fill the disk:
- fake ENOSPC at the write call (monkeypatch of the one call that writes: `Path.write_bytes`
  for atomic_write_json, pyarrow's `ParquetWriter.write_table` for extract's tables), which
  runs everywhere;
- a real 32 MiB tmpfs, filled up, under convert's resume folder (ffmpeg, a separate process,
  is the writer there). Mounting needs a user namespace (`unshare -rm`), which some CI
  runners forbid: that test skips then, and says so.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from facedag.records import StageFailed, atomic_write_json, sha256_file
from facedag.resume import ROOT_ENV, space_guard
from tests.conftest import REPO
from tests.stages.test_extract import make_clip, portrait
from tests.stages.test_extract import make_project as make_extract_project
from tests.swap.test_convert import make_target

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def leftovers(folder: Path) -> list[str]:
    """Temp files of atomic writes (records.atomic_path names them `.<stem>.<random>.tmp<suffix>`)."""
    return sorted(p.name for p in folder.rglob(".*.tmp*"))


def test_atomic_write_json_on_a_full_disk_keeps_the_previous_file(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    path = tmp_path / "metrics.json"
    atomic_write_json(path, {"faces": 12})
    before = path.read_bytes()
    real_write = Path.write_bytes

    def full_after_half(self: Path, data: bytes) -> int:
        real_write(self, data[: len(data) // 2])  # what fitted, then the disk is full
        raise ENOSPC

    monkeypatch.setattr(Path, "write_bytes", full_after_half)
    with pytest.raises((OSError, StageFailed)) as raised:  # StageFailed once records.atomic_path names the file
        atomic_write_json(path, {"faces": 13, "pad": "x" * 10_000})
    if isinstance(raised.value, OSError):
        assert raised.value.errno == errno.ENOSPC
    else:
        assert str(raised.value) == f"no space left on device while writing {path}"
    with pytest.raises(StageFailed, match=rf"^no space left on device while writing {path}$"), space_guard(path):
        atomic_write_json(path, {"faces": 14})
    assert path.read_bytes() == before and leftovers(tmp_path) == []


def test_extract_on_a_full_disk_fails_in_one_line_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    face = make_clip(tmp_path / "face.mp4", portrait(), frames=8)
    root = make_extract_project(tmp_path / "proj", {"a.mp4": face, "b.mp4": face})
    resume = tmp_path / "resume"
    monkeypatch.chdir(root)
    monkeypatch.setenv(ROOT_ENV, str(resume))
    monkeypatch.setattr(sys, "argv", ["stages.extract", "src"])
    from stages import extract

    real_write = pq.ParquetWriter.write_table
    parts_written: list[str] = []

    def disk_fills_on_the_second_clip(self: pq.ParquetWriter, table, *args, **kwargs) -> None:
        if "clip-00001" in str(getattr(self, "where", "")):
            raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")
        parts_written.append(str(self.where))
        real_write(self, table, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", disk_fills_on_the_second_clip)
    with pytest.raises(SystemExit) as exited:
        extract.identity_main(extract.STAGE, extract.run)
    assert exited.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("extract@src: error: no space left on device while writing ")
    assert err[0].endswith(str(resume / "extract" / "src" / "clip-00001.parquet"))
    first = resume / "extract" / "src" / "clip-00000.parquet"
    kept = sha256_file(first)
    assert parts_written and not (root / "data/extract/src/faces.parquet").exists()
    assert leftovers(resume) == [] and leftovers(root / "data") == []

    monkeypatch.setattr(pq.ParquetWriter, "write_table", real_write)  # space freed
    assert sha256_file(first) == kept
    extract.identity_main(extract.STAGE, extract.run)
    out = capsys.readouterr().out
    assert "resuming: 1 of 2 clips done" in out
    metrics = json.loads((root / "data/extract/src/metrics.json").read_text())
    assert metrics["clips"] == 2 and metrics["faces"] == metrics["frames_with_face"] > 0
    assert not (resume / "extract").exists()


# -- a real full tmpfs ---------------------------------------------------------------------------

DRIVER = """
import json, os, subprocess, sys
from pathlib import Path

resume, result = Path(sys.argv[1]), Path(sys.argv[2])
env = dict(os.environ)
chunks = resume / "convert"

def stage(fault=None):
    e = dict(env)
    if fault:
        e["FACEDAG_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "stages.convert"], env=e, capture_output=True, text=True)

def sums():
    return {p.name: __import__("hashlib").sha256(p.read_bytes()).hexdigest() for p in sorted(chunks.glob("chunk-*"))}

out = {}
first = stage("convert:chunk_done:1")
out["killed_rc"], out["after_kill"] = first.returncode, sums()
with open(resume / "filler", "wb") as fh:  # fill the disk
    try:
        while True:
            fh.write(b"\\0" * (1 << 16))
            fh.flush()
    except OSError as exc:
        out["filler_errno"] = exc.errno
full = stage()
out["full_rc"], out["full_err"], out["after_full"] = full.returncode, full.stderr, sums()
out["full_leftovers"] = sorted(p.name for p in chunks.glob(".*.tmp*"))
out["out_leftovers"] = sorted(p.name for p in Path("data/convert").glob(".*.tmp*"))
(resume / "filler").unlink()  # space freed
freed = stage()
out["freed_rc"], out["freed_out"], out["freed_err"] = freed.returncode, freed.stdout, freed.stderr
out["resume_left"] = sorted(p.name for p in resume.rglob("*"))
result.write_text(json.dumps(out))
"""


def userns_tmpfs_works(where: Path) -> bool:
    """Whether this machine lets an unprivileged user namespace mount a tmpfs."""
    if shutil.which("unshare") is None:
        return False
    where.mkdir(parents=True, exist_ok=True)
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m none '{where}'"],
                           capture_output=True, timeout=30, check=False)  # fmt: skip
    return probe.returncode == 0


def convert_project(root: Path, demo: Path, target: Path) -> Path:
    """A project for `python -m stages.convert`: params (the demo's consent records and their
    evidence files, a short target, batch 16 so chunks are whole detector groups) and a small
    untrained model."""
    import torch

    from facedag.training.model import ModelConfig, build_model, save_model

    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["base"]["face_size"] = 64
    data["target"]["uri"] = str(target)
    data["convert"]["batch"] = 16
    shutil.copytree(demo, root / "data" / "demo")
    (root / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    torch.manual_seed(0)
    cfg = ModelConfig(face_size=64, encoder_width=8, decoder_width=8, bottleneck=32, identities=("src", "dst"))
    model = build_model(cfg).eval()
    save_model(model, cfg, root / "models", {"step": 0})
    save_model(model, cfg, root / "models", {"step": 0}, name="best")  # what convert paints with by default
    return root


def test_convert_on_a_real_full_tmpfs(tmp_path: Path, demo_sources: Path) -> None:
    resume = tmp_path / "resume"
    if not userns_tmpfs_works(resume):
        pytest.skip("this machine does not let a user namespace mount a tmpfs (unshare -rm)")
    target = make_target(demo_sources, tmp_path / "target.mp4", audio=False)  # 35 frames: chunks of 16, 16, 3
    ref = convert_project(tmp_path / "ref", demo_sources, target)
    run = convert_project(tmp_path / "run", demo_sources, target)
    env = dict(os.environ, PYTHONPATH=str(REPO), FACEDAG_CONVERT_CHUNK_FRAMES="16")
    env.pop("FACEDAG_FAULT", None)
    done = subprocess.run([sys.executable, "-m", "stages.convert"], cwd=ref, capture_output=True, text=True,
                          env={**env, ROOT_ENV: str(tmp_path / "ref-resume")}, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr

    (tmp_path / "driver.py").write_text(DRIVER)
    driver = f"'{sys.executable}' '{tmp_path / 'driver.py'}' '{resume}' '{tmp_path / 'result.json'}'"
    script = f"mount -t tmpfs -o size=32m none '{resume}' && exec {driver}"
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=run, env={**env, ROOT_ENV: str(resume)},
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads((tmp_path / "result.json").read_text())

    assert out["killed_rc"] == -9 and sorted(out["after_kill"]) == ["chunk-000000.json", "chunk-000000.mkv",
                                                                     "chunk-000000.parquet"]  # fmt: skip
    assert out["filler_errno"] == errno.ENOSPC
    assert out["full_rc"] == 1
    (line,) = out["full_err"].strip().splitlines()  # the folder, or the chunk's file in it
    assert line.startswith(f"convert: error: no space left on device while writing {resume / 'convert'}"), line
    assert out["after_full"] == out["after_kill"]  # the finished chunk is intact
    assert out["full_leftovers"] == [] and out["out_leftovers"] == []
    assert out["freed_rc"] == 0, out["freed_err"]
    assert "resuming: 1 of ~3 chunks done" in out["freed_out"]
    assert out["resume_left"] == []  # the resume folder was cleared
    for name in ("frames.mkv", "frames.parquet"):
        assert sha256_file(run / "data/convert" / name) == sha256_file(ref / "data/convert" / name), name
