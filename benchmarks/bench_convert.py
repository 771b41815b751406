"""convert throughput on the 640x480 sample (../shared/samples/video_02.mp4).

Figures (see benchmarks/common.py for the format):
- `convert_fps`: frames per second through facedag.swap.convert.convert_video with the shipped
  `convert` defaults and a real model at base.face_size 128: a freshly initialised
  FaceSwapModel (the demo widths from `train` params) saved with save_model and loaded by
  facedag.training.model.Swapper, as the stage does (throughput does not depend on what the weights
  learned). Decode, detect + follow, smooth, align, swap (batched), mask, colour match
  (rct), paste, FFV1 encode: everything but the atomic rename.
  Baseline, measured in the same run: the same pass with the identity function as the swap
  (`no_model_fps`: detection, alignment, blending and encoding without the model), and
  `passthrough_fps`: decode + FFV1 encode alone, the ceiling of any convert.
  Best of `REPEATS` passes each, interleaved, because the machine is shared.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import SAMPLES, figure

CLIP = SAMPLES / "video_02.mp4"
REPEATS = 3
FACE_SIZE = 128


def _passthrough(path: Path, out: Path) -> tuple[int, float]:
    from facedag.sources.media import iter_frames, probe
    from facedag.swap.convert import VideoWriter, frame_rate

    info = probe(path)
    t = time.perf_counter()
    writer = VideoWriter(out, info.width, info.height, frame_rate(path))
    n = 0
    for frame in iter_frames(path):
        writer.write(frame.image)
        n += 1
    writer.close()
    return n, time.perf_counter() - t


def _convert(path: Path, out: Path, swap: Any) -> tuple[int, int, float]:
    from facedag.params import Convert
    from facedag.swap.convert import convert_video

    t = time.perf_counter()
    stats = convert_video(path, out, swap, FACE_SIZE, Convert())
    return stats.frames, stats.frames_swapped, time.perf_counter() - t


def run(clip: Path = CLIP, key: str = "convert_fps", repeats: int = REPEATS) -> dict[str, dict]:
    """The figures on `clip` (benchmarks/gpu_check.py passes a 1080p one, as `convert_fps_1080p`,
    with one pass each to stay within its five minutes)."""
    if not clip.exists():
        print(f"bench_convert: {clip} is absent, no figures")
        return {}
    import torch

    from facedag.device import pick_device
    from facedag.params import Convert, Train
    from facedag.training.model import ModelConfig, Swapper, build_model, save_model
    from facedag.training.sizes import resolve

    tr = resolve(Train())
    with tempfile.TemporaryDirectory(prefix="bench_convert.") as tmp:
        work = Path(tmp)
        torch.manual_seed(0)
        cfg = ModelConfig(FACE_SIZE, tr.encoder_width, tr.decoder_width, tr.bottleneck, ("src", "dst"))
        save_model(build_model(cfg), cfg, work / "models", {"step": 0, "note": "benchmark: untrained"})
        device = pick_device("auto")  # the GPU where there is one, as convert runs with `device: auto`
        swapper = Swapper(work / "models", "src", device=device, batch=Convert().batch)

        def identity(faces: np.ndarray) -> np.ndarray:
            return faces

        _convert(clip, work / "warm.mkv", swapper)  # warm up: sessions, page cache, lazy imports
        best = {"model": 0.0, "no_model": 0.0, "passthrough": 0.0}
        frames = swapped = 0
        for _ in range(repeats):
            frames, swapped, dt = _convert(clip, work / "a.mkv", swapper)
            best["model"] = max(best["model"], frames / dt)
            n, _, dt = _convert(clip, work / "b.mkv", identity)
            best["no_model"] = max(best["no_model"], n / dt)
            n, dt = _passthrough(clip, work / "c.mkv")
            best["passthrough"] = max(best["passthrough"], n / dt)
    return {
        key: figure(
            best["model"], "frames/s", "the same convert with an identity swap (no model)", best["no_model"],
            clip=clip.name, frames=frames, frames_swapped=swapped, face_size=FACE_SIZE,
            model=f"FaceSwapModel enc {tr.encoder_width} dec {tr.decoder_width} bottleneck {tr.bottleneck}, "
            "freshly initialised",
            passthrough_fps=round(best["passthrough"], 3), torch_threads=torch.get_num_threads(),
            gpu=device.type == "cuda", model_device=device.type,
            note=f"decode+detect+align+swap+blend+FFV1 encode, best of {repeats}; passthrough = decode+encode",
        ),
    }  # fmt: skip


def main() -> int:
    for key, fig in run().items():
        print(key, json.dumps(fig))
    return 0


if __name__ == "__main__":
    sys.exit(main())
