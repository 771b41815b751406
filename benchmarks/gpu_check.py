"""The GPU check: one script, under five minutes, that a machine with a CUDA GPU runs as is.

    python -m benchmarks.gpu_check            # writes its figures into benchmarks/results.json

1. bench_train on the GPU: presets 128 and 256 at batch 16, 64 and 128 per identity: faces/s
   beside the plain loop, GPU memory peak, and MFU = FLOP per face x faces/s / the GPU's dense
   bf16 peak (named: H100 SXM and H200 989 TFLOP/s, H100 PCIe 756, A100 312).
2. sync-debug: 30 training steps of a real Trainer under torch.cuda.set_sync_debug_mode("warn"):
   how many times the step made the host wait for the GPU (the goal: 0).
3. checkpoints travel: a tiny run trains on the CPU, resumes on CUDA, then on the CPU again, and
   each resume says which device wrote its checkpoint.
4. CUDA against CPU: the same model swaps 64 faces on both; the largest and mean difference (uint8).
5. convert at 1080p: frames/s of the convert stage's work on a 1920x1080 demo clip (4 s), the
   model on the GPU (bench_convert), beside the same convert with no model.

Each part is timed; a part that fails is recorded with its error and the rest still run. Nothing
here has run on a GPU yet (see the README, "Training on GPUs"): the first run is the check.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from benchmarks.common import device_name
from facedag.records import atomic_write_json

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results.json"
TINY = {"deterministic": False, "max_steps": 4, "batch_size": 4, "encoder_width": 8, "decoder_width": 8,
        "bottleneck": 16, "checkpoint_every": 4, "eval_every": 4, "preview_every": 100, "keep_checkpoints": 2}


def tiny_project(root: Path, face: int, train: dict[str, Any], device: str) -> Path:
    """A project folder as the tests make one: params.yaml (this repo's, `train` over it) and demo faces."""
    from facedag.training.dataset import dataset_path, holdout_path
    from facedag.training.portrait_set import write_portrait_dataset

    for name, portrait in (("src", "astronaut"), ("dst", "grace_hopper")):
        write_portrait_dataset(dataset_path(root, name), portrait, face, tracks=3, per_track=8, seed=1)
        write_portrait_dataset(holdout_path(root, name), portrait, face, tracks=1, per_track=4, seed=2,
                               first_track=3)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["base"] = {**raw["base"], "face_size": face}
    raw["device"] = device
    raw["train"] = {**raw["train"], **train}
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return root


def load(root: Path, **train: Any) -> Any:
    from facedag.params import Params

    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["train"] = {**raw["train"], **train}
    return Params.model_validate(raw)


def train_bench() -> dict[str, Any]:
    from benchmarks.bench_train import gpu_figures

    return gpu_figures(min_seconds=2.0)


def sync_debug(steps: int = 30) -> dict[str, Any]:
    """Host waits per training step, counted by CUDA's sync debug mode over `steps` steps."""
    from benchmarks.bench_train import make_trainer, ours_step, write_faces

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_faces(root, 128)
        run = make_trainer(root, 128, {"preset": "128", "batch_size": 64}, "cuda")
        step = ours_step(run)
        for _ in range(3):  # warm-up: cuDNN autotuning, allocator growth, lazy init
            step()
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                for _ in range(steps):
                    step()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
    syncs = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message)]
    return {"gpu_sync_debug": {"value": len(syncs), "unit": f"host syncs in {steps} training steps", "goal": 0,
                               "first": sorted(set(syncs))[:5], "device": device_name(gpu=True)}}


def resume_across_devices() -> dict[str, Any]:
    """CPU -> CUDA -> CPU resumes of one tiny run; each says which device wrote its checkpoint."""
    from facedag.training.loop import train

    with tempfile.TemporaryDirectory() as tmp:
        root = tiny_project(Path(tmp), 32, TINY, "cpu")
        legs = []
        for device, steps in (("cpu", 4), ("cuda", 8), ("cpu", 12)):
            logs: list[str] = []
            params = load(root, max_steps=steps).model_copy(update={"device": device})
            r = train(params, root, logs.append)
            legs.append({"device": device, "step": r.step, "resumed_from": r.resumed_from,
                         "said": next((ln for ln in logs if ln.startswith("resumed from")), None)})
        ok = [leg["step"] for leg in legs] == [4, 8, 12] and all(
            leg["said"] and "written on" in leg["said"] for leg in legs[1:])
    return {"gpu_resume_across_devices": {"value": ok, "unit": "cpu -> cuda -> cpu resumes", "legs": legs,
                                          "device": device_name(gpu=True)}}


def swap_cuda_vs_cpu(n: int = 64) -> dict[str, Any]:
    """The same (freshly initialised, demo-size) model swapping the same `n` faces on CUDA and on the CPU."""
    from facedag.training.dataset import read_faces
    from facedag.training.model import ModelConfig, Swapper, build_model, save_model
    from facedag.training.portrait_set import write_portrait_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        cfg = ModelConfig(128, 16, 16, 128, ("src", "dst"))
        save_model(build_model(cfg), cfg, root / "models", {"step": 0})
        path = root / "faces.parquet"
        write_portrait_dataset(path, "grace_hopper", 128, tracks=4, per_track=n // 4, seed=3)
        faces = read_faces(path, 128)[0]
        faces = faces[:n]
        cpu = Swapper(root / "models", "src", "cpu", batch=16)(faces)
        cuda = Swapper(root / "models", "src", "cuda", batch=16)(faces)
    diff = np.abs(cpu.astype(np.int16) - cuda.astype(np.int16))
    return {"gpu_swap_vs_cpu": {"value": int(diff.max()), "unit": "largest |cuda - cpu| (uint8 levels)",
                                "mean": round(float(diff.mean()), 4), "faces": len(faces),
                                "identical_pixels": round(float((diff == 0).mean()), 4),
                                "device": device_name(gpu=True)}}


def convert_1080p() -> dict[str, Any]:
    from benchmarks import bench_convert
    from facedag.sources.demo import Recipe, build

    with tempfile.TemporaryDirectory() as tmp:
        recipe = Recipe("target", "grace_hopper", seed=33, tone_hz=659, seconds=4.0, width=1920, height=1080,
                        face_heights=(600.0, 480.0, 380.0))
        clip, _ = build(recipe, Path(tmp))
        return bench_convert.run(clip, key="convert_fps_1080p", repeats=1)


PARTS: dict[str, Callable[[], dict[str, Any]]] = {
    "train": train_bench, "sync_debug": sync_debug, "resume": resume_across_devices,
    "swap": swap_cuda_vs_cpu, "convert_1080p": convert_1080p,
}


def main() -> int:
    if not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA GPU here: nothing measured", file=sys.stderr)
        return 2
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    started = time.monotonic()
    report: dict[str, Any] = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "parts": {}}
    for name, part in PARTS.items():
        t0 = time.monotonic()
        try:
            figures = part()
            results.update(figures)
            report["parts"][name] = {"seconds": round(time.monotonic() - t0, 1), "figures": list(figures)}
            print(f"gpu_check {name}: {json.dumps(figures)[:2000]}", flush=True)
        except Exception as exc:  # one part's failure is a finding, not the end of the check
            report["parts"][name] = {"seconds": round(time.monotonic() - t0, 1), "error": repr(exc),
                                     "traceback": traceback.format_exc()[-3000:]}
            print(f"gpu_check {name}: FAILED {exc!r}", flush=True)
        atomic_write_json(RESULTS, {**results, "gpu_check": report})  # what is done survives a timeout
    report["seconds"] = round(time.monotonic() - started, 1)
    atomic_write_json(RESULTS, {**results, "gpu_check": report})
    print(f"gpu_check: {report['seconds']} s; wrote {RESULTS}")
    return 0 if all("error" not in p for p in report["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
