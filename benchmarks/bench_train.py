"""Training throughput: faces per second of facedag's training step, beside a plain loop of the same
work in the same run, and (on a GPU) the model FLOP utilisation.

- ours: what facedag.training.loop runs per step, on a real Trainer: `Trainer.step` (sampler,
  CPU-drawn augmentation, every identity through the encoder in one pass, masked SSIM + L1 loss,
  AdamW, the weight average) plus the loop's per-step checks (stop reason, the three cadences).
- baseline ("plain loop"): the same model, batch, augmentation, loss and AdamW written as the
  shortest loop that does that work (random indices, the synthetic occluders and the learned
  mask's loss, one forward per identity, no weight
  average, no checks). `overhead` = ours / plain - 1 in step time, the median over rounds of the
  per-round ratio: what facedag's machinery costs per step (the goal on the CPU: <= 10 %).
- network_only_egs_per_s: the same model and AdamW with no augmentation and an MSE loss, for the
  cost of the network alone.

Models: `demo` (the demo preset at base.face_size 128, as params.yaml) and `128px` (preset 128:
widths 64/64, bottleneck 512, 59.9 M params). On CUDA, `gpu` figures: presets 128 and 256 at
batch 16, 64 and 128 per identity, bf16 where the GPU has it, each with its MFU:
FLOP per face (torch.utils.flop_counter over one forward + backward, per face) x faces/s / the
GPU's dense bf16 peak (PEAK_BF16, named in the figure).
Faces: the demo portraits aligned a few ways (facedag.training.portrait_set).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml

from benchmarks.common import figure
from facedag.params import Params
from facedag.training.augment import AugmentConfig, augment
from facedag.training.dataset import dataset_path, holdout_path
from facedag.training.loop import Cadence, Trainer
from facedag.training.losses import face_region, mask_loss, masked_loss, weight_map
from facedag.training.model import ModelConfig, build_model
from facedag.training.occluders import paste
from facedag.training.portrait_set import write_portrait_dataset
from facedag.training.stopping import StopSignal

REPO = Path(__file__).resolve().parents[1]
IDS = ("src", "dst")
FACE = 128
CPU_MODELS = {"demo": {"preset": "demo"}, "128px": {"preset": "128", "batch_size": 4}}
GPU_BATCHES = (16, 64, 128)
GPU_PRESETS = {"128": 128, "256": 256}  # preset -> face size
# dense bf16 FLOP/s by GPU name (no sparsity), most specific first
PEAK_BF16 = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "A100": 312e12}


def peak_of(gpu: str) -> tuple[str, float] | None:
    """(name, dense bf16 FLOP/s) of the GPU called `gpu`, or None when not in PEAK_BF16."""
    return next(((k, v) for k, v in PEAK_BF16.items() if k in gpu), None)


def write_faces(root: Path, face: int) -> None:
    for name, portrait in zip(IDS, ("astronaut", "grace_hopper"), strict=True):
        write_portrait_dataset(dataset_path(root, name), portrait, face, tracks=4, per_track=8, seed=0)
        write_portrait_dataset(holdout_path(root, name), portrait, face, tracks=1, per_track=4, seed=1,
                               first_track=4)


def make_trainer(root: Path, face: int, train: dict[str, Any], device: str) -> Trainer:
    """A real Trainer on the faces under `root` (the repo's params.yaml with `train` over it)."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["base"] = {**raw["base"], "face_size": face, "seed": 0}
    raw["device"] = device
    raw["train"] = {**raw["train"], **train}
    return Trainer(Params.model_validate(raw), root, root / "models", lambda _: None)


def ours_step(run: Trainer) -> Callable[[], None]:
    stopper, started = StopSignal(), time.monotonic()
    cadences = [Cadence(10**9, 60.0) for _ in range(3)]

    def step() -> None:
        run.step()
        run.stop_reason(stopper, started, 1e9)
        for c in cadences:
            c.due(run.step_no)

    return step


def plain_step(run: Trainer, augmented: bool = True) -> Callable[[], None]:
    """The same work as Trainer.step as the shortest loop (see the module docstring)."""
    torch.manual_seed(0)
    device, cfg, batch = run.device, run.cfg, run.batch
    model = build_model(cfg).to(device, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=run.t.lr, weight_decay=run.t.weight_decay,
                            fused=device.type == "cuda" or None)
    gen = torch.Generator().manual_seed(0)
    wmap, aug, dtype = weight_map(cfg.face_size, 3.0, device), AugmentConfig(), run.amp_dtype
    region = face_region(cfg.face_size, device)
    sizes = {n: len(run.sets[n].train_idx) for n in IDS}

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=device)
        for name in IDS:
            x = run.sets[name].batch(torch.randint(sizes[name], (batch,), generator=gen))
            inp, tgt, w = augment(x, wmap, aug, gen) if augmented else (x, x, None)
            cover = None
            if augmented and run.bank is not None:  # the loop's synthetic occluders, as it pastes them
                inp, tgt, cover = paste(inp, tgt, run.bank, run.t.occluder_prob, gen)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                y, m = model.forward_masked(inp.contiguous(memory_format=torch.channels_last), name)
            if not augmented:
                total = total + F.mse_loss(y.float(), tgt)
                continue
            keep = 1.0 if cover is None else 1.0 - cover
            total = total + masked_loss(y, tgt, w * keep)[0]
            if m is not None:  # the learned mask's loss, against the template's face region
                total = total + run.t.mask_weight * mask_loss(m, region * keep, cover)
        total.backward()
        opt.step()

    return step


def time_interleaved(steps: dict[str, Callable[[], None]], device: torch.device, min_s: float,
                     min_steps: int = 3) -> dict[str, list[float]]:
    """Seconds of each step of each variant, timed in alternating rounds (one step each per round)
    after one warm-up step each, so that load from other processes on a shared machine hits all alike."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for step in steps.values():
        step()
    sync()
    times: dict[str, list[float]] = {name: [] for name in steps}
    while min(len(t) for t in times.values()) < min_steps or min(sum(t) for t in times.values()) < min_s:
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            sync()
            times[name].append(time.perf_counter() - t0)
    return times


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def overhead(ours: list[float], plain: list[float]) -> float:
    """ours / plain - 1 as the median over rounds of the per-round ratio: a load spike from another
    process lands on one round, and the median leaves it out where a ratio of totals would not."""
    ratios = sorted(a / b for a, b in zip(ours, plain, strict=False))
    return ratios[len(ratios) // 2] - 1


def flop_per_face(cfg: ModelConfig, device: torch.device, batch: int = 4) -> float:
    """Model FLOP of one training step per face: forward + backward of one identity's batch, counted
    by torch.utils.flop_counter, divided by the batch."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(cfg).to(device)
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.rand(batch, 3, cfg.face_size, cfg.face_size, device=device), IDS[0]).mean().backward()
    return float(counter.get_total_flops()) / batch


def cpu_figures(min_seconds: float) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_faces(root, FACE)
        for label, train in CPU_MODELS.items():
            run = make_trainer(root, FACE, train, "cpu")
            per_step = run.batch * len(IDS)
            times = time_interleaved({"ours": ours_step(run), "plain": plain_step(run),
                                      "network": plain_step(run, augmented=False)}, run.device, min_seconds)
            secs = {k: mean(v) for k, v in times.items()}
            cfg = run.cfg
            key = "train_egs_per_s" if label == "demo" else "train_egs_per_s_128px"
            results[key] = figure(
                per_step / secs["ours"], "faces/s", "plain loop of the same work (same model, batch, augmentation, "
                "loss and AdamW; no sampler, weight average or per-step checks)", per_step / secs["plain"],
                overhead=round(overhead(times["ours"], times["plain"]), 4), rounds=len(times["ours"]),
                preset=train["preset"], torch_threads=torch.get_num_threads(),
                model={"face_size": cfg.face_size, "encoder_width": cfg.encoder_width,
                       "decoder_width": cfg.decoder_width, "bottleneck": cfg.bottleneck},
                batch_per_identity=run.batch, identities=len(IDS), precision=run.precision,
                network_only_egs_per_s=round(per_step / secs["network"], 3),
            )  # fmt: skip
    return results


def gpu_figures(min_seconds: float, batches: tuple[int, ...] = GPU_BATCHES) -> dict[str, dict[str, Any]]:
    """Per preset and batch: faces/s of ours and of the plain loop, and the MFU (module docstring)."""
    device = torch.device("cuda")
    gpu = torch.cuda.get_device_name()
    peak = peak_of(gpu)
    rows = []
    for preset, face in GPU_PRESETS.items():
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            write_faces(root, face)
            for batch in batches:
                torch.cuda.reset_peak_memory_stats()
                run = make_trainer(root, face, {"preset": preset, "batch_size": batch}, "cuda")
                times = time_interleaved({"ours": ours_step(run), "plain": plain_step(run)}, device, min_seconds)
                secs = {k: mean(v) for k, v in times.items()}
                faces_per_s = batch * len(IDS) / secs["ours"]
                fpf = flop_per_face(run.cfg, device)
                rows.append({
                    "preset": preset, "face_size": face, "batch_per_identity": batch,
                    "faces_per_s": round(faces_per_s, 1),
                    "plain_faces_per_s": round(batch * len(IDS) / secs["plain"], 1),
                    "gflop_per_face": round(fpf / 1e9, 2), "precision": run.precision,
                    "mfu": round(fpf * faces_per_s / peak[1], 4) if peak else None,
                    "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
                })  # fmt: skip
                del run
                torch.cuda.empty_cache()
    best = max(rows, key=lambda r: r["faces_per_s"] if r["preset"] == "256" else -1)
    return {"train_gpu": figure(
        best["faces_per_s"], "faces/s", "plain loop of the same work", best["plain_faces_per_s"], gpu=True,
        headline="preset 256 at its fastest batch", mfu=best["mfu"],
        peak=f"{peak[0]} dense bf16 {peak[1] / 1e12:.0f} TFLOP/s" if peak else f"unknown for {gpu}", rows=rows,
    )}


def run(min_seconds: float = 6.0) -> dict[str, dict[str, Any]]:
    results = cpu_figures(min_seconds) if not torch.cuda.is_available() else {}
    if torch.cuda.is_available():
        results.update(gpu_figures(min(min_seconds, 3.0)))
    return results


if __name__ == "__main__":
    for key, fig in run().items():
        print(key, fig)
