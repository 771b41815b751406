"""download + trim throughput on long 1080p footage, beside decoding the same footage alone.

The source (benchmarks/long_source.py, cached in benchmarks/.cache): at least `MINUTES`
minutes of 1080p H.264 + AAC built from the samples, whose timestamps skip a frame where
it was joined, so it is not constant-rate (the case that used to be re-encoded whole).

Figures (see benchmarks/common.py for the format):
- `trim_realtime`: seconds of footage per second of wall time through the real download and
  trim stages (`python -m stages.download src`, then `python -m stages.trim src`, each a
  process of its own, as DVC runs them, imports included), with the shipped params except
  `trim.max_seconds` = `KEEP_SECONDS` (a few minutes of an hour is what trim is for).
  Baseline: decoding every frame of the same file alone with PyAV (decoder threads on, no
  conversion), in the same run: the ceiling for anything that looks at every frame.
  `of_decode` is the ratio (the goal is >= 0.5); `download_s`, `trim_s`, `kept_s` and
  `stored_as_fetched` say where the time went and what came out.

The machine is shared: decoding is timed before and after the stages and the baseline is the
mean of the two, so a load that changes during the run weighs on both sides alike; the same
ratio in CPU seconds (`of_decode_cpu`: the stages' processes and their ffmpeg children against
the decoding thread pool) is beside it, less sensitive to what else runs.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import SAMPLES, figure
from benchmarks.long_source import long_source

MINUTES = 10.0
KEEP_SECONDS = 60.0
REPO = Path(__file__).resolve().parents[1]


def decode_pass(path: Path) -> tuple[int, float, float]:
    """(frames, wall seconds, CPU seconds) to decode every frame of `path`, nothing else."""
    import av

    t, cpu = time.perf_counter(), time.process_time()
    with av.open(os.fspath(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = 0
        n = sum(1 for _ in container.decode(stream))
    return n, time.perf_counter() - t, time.process_time() - cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _stage(project: Path, name: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the stage and the ffmpeg it ran)."""
    t, cpu = time.perf_counter(), _children_cpu()
    proc = subprocess.run([sys.executable, "-m", f"stages.{name}", "src"], cwd=project, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed: {proc.stderr[-2000:]}")
    return time.perf_counter() - t, _children_cpu() - cpu


def pipeline_pass(src: Path) -> dict[str, Any]:
    """download + trim of `src` in a fresh project: their wall times and what they made."""
    with tempfile.TemporaryDirectory(prefix="bench-trim-") as tmp:
        project = Path(tmp)
        params = {
            "identities": {"src": {"sources": [{"uri": os.fspath(src), "licence": "CC-BY-2.0"}]}},
            "target": {"uri": "none.mp4"},
            "trim": {"max_seconds": KEEP_SECONDS},
        }
        (project / "params.yaml").write_text(yaml.safe_dump(params))
        download_s, download_cpu = _stage(project, "download")
        trim_s, trim_cpu = _stage(project, "trim")
        import pandas as pd

        manifest = pd.read_parquet(project / "data" / "download" / "src" / "manifest.parquet")
        metrics = json.loads((project / "data" / "trim" / "src" / "metrics.json").read_text())
        return {"download_s": download_s, "trim_s": trim_s, "cpu_s": download_cpu + trim_cpu,
                "copied": bool(manifest["copied"].iloc[0]),
                "kept_s": metrics["seconds_kept"], "shots": metrics["shots"], "samples": metrics["samples"]}


def run() -> dict[str, dict[str, Any]]:
    if not (SAMPLES / "video_02.mp4").exists():
        print("bench_trim: ../shared/samples not found; skipped")
        return {}
    from facedag.sources.media import probe

    src = long_source(MINUTES)
    footage = probe(src).duration
    frames, before_s, before_cpu = decode_pass(src)
    done = pipeline_pass(src)
    _, after_s, after_cpu = decode_pass(src)
    decode_s, decode_cpu = (before_s + after_s) / 2, (before_cpu + after_cpu) / 2
    wall = done["download_s"] + done["trim_s"]
    decode_rt, trim_rt = footage / decode_s, footage / wall
    return {
        "trim_realtime": figure(
            trim_rt, "s of 1080p footage / s", "decode alone (PyAV, every frame, same file, same run)", decode_rt,
            of_decode=round(trim_rt / decode_rt, 3), footage_s=round(footage, 1), frames=frames,
            download_s=round(done["download_s"], 1), trim_s=round(done["trim_s"], 1), kept_s=done["kept_s"],
            shots=done["shots"], face_samples=done["samples"], stored_as_fetched=done["copied"],
            decode_s=[round(before_s, 1), round(after_s, 1)],
            of_decode_cpu=round(decode_cpu / done["cpu_s"], 3), cpu_s=round(done["cpu_s"], 1),
            decode_cpu_s=round(decode_cpu, 1),
        ),
    }
