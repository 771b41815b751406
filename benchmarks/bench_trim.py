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
"""

from __future__ import annotations

import json
import os
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


def decode_pass(path: Path) -> tuple[int, float]:
    """(frames, seconds) to decode every frame of `path`, nothing else."""
    import av

    t = time.perf_counter()
    with av.open(os.fspath(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = 0
        n = sum(1 for _ in container.decode(stream))
    return n, time.perf_counter() - t


def _stage(project: Path, name: str) -> float:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", f"stages.{name}", "src"], cwd=project, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed: {proc.stderr[-2000:]}")
    return time.perf_counter() - t


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
        download_s = _stage(project, "download")
        trim_s = _stage(project, "trim")
        import pandas as pd

        manifest = pd.read_parquet(project / "data" / "download" / "src" / "manifest.parquet")
        metrics = json.loads((project / "data" / "trim" / "src" / "metrics.json").read_text())
        return {"download_s": download_s, "trim_s": trim_s, "copied": bool(manifest["copied"].iloc[0]),
                "kept_s": metrics["seconds_kept"], "shots": metrics["shots"], "samples": metrics["samples"]}


def run() -> dict[str, dict[str, Any]]:
    if not (SAMPLES / "video_02.mp4").exists():
        print("bench_trim: ../shared/samples not found; skipped")
        return {}
    from facedag.sources.media import probe

    src = long_source(MINUTES)
    footage = probe(src).duration
    frames, decode_s = decode_pass(src)
    done = pipeline_pass(src)
    wall = done["download_s"] + done["trim_s"]
    decode_rt, trim_rt = footage / decode_s, footage / wall
    return {
        "trim_realtime": figure(
            trim_rt, "s of 1080p footage / s", "decode alone (PyAV, every frame, same file, same run)", decode_rt,
            of_decode=round(trim_rt / decode_rt, 3), footage_s=round(footage, 1), frames=frames,
            download_s=round(done["download_s"], 1), trim_s=round(done["trim_s"], 1), kept_s=done["kept_s"],
            shots=done["shots"], face_samples=done["samples"], stored_as_fetched=done["copied"],
            decode_s=round(decode_s, 1),
        ),
    }
