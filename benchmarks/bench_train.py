"""Training throughput: examples (faces) per second of our full training step, beside a plain fp32
loop of the same model in the same run.

- ours: what facedag.training.loop does per step: for each of the 2 identities a batch sampled from the
  resident uint8 dataset, GPU-side augmentation (facedag.training.augment: warp, flip, colour, light), the
  model, the masked SSIM + L1 loss (facedag.training.losses), then one AdamW step. fp32 on the CPU; bf16
  autocast under CUDA (as training runs).
- baseline ("plain fp32 loop"): the same model, batch and AdamW in fp32 on the same faces with no
  augmentation and a plain mean-squared-error loss: the cost of the network alone, so the gap is
  what augmentation and the masked SSIM loss cost.

Two models: `demo` (params defaults: Train() at base.face_size 128, widths 16/16, bottleneck 128)
and `128px` (the size the README suggests for real runs: widths 64/64, bottleneck 512, 128 px).
On CUDA (not on the 2-core CI machine) each also gets bf16 + channels_last and torch.compile
variants and an MFU (model FLOPs per step counted by torch.utils.flop_counter, over the GPU's dense
bf16 peak).
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

from benchmarks.common import figure
from facedag.params import Train
from facedag.training.augment import AugmentConfig, augment
from facedag.training.dataset import dataset_path, load_dataset
from facedag.training.losses import masked_loss, weight_map
from facedag.training.model import FaceSwapModel, ModelConfig, build_model
from facedag.training.portrait_set import write_portrait_dataset
from facedag.training.sampler import Sampler

IDS = ("src", "dst")
MODELS = {
    "demo": {"face_size": 128, "encoder_width": Train().encoder_width, "decoder_width": Train().decoder_width,
             "bottleneck": Train().bottleneck, "batch": Train().batch_size},
    "128px": {"face_size": 128, "encoder_width": 64, "decoder_width": 64, "bottleneck": 512, "batch": 4},
}
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 FLOP/s


def _time_interleaved(steps: dict[str, Callable[[], None]], device: torch.device, min_s: float,
                      min_steps: int = 2) -> dict[str, float]:
    """Seconds per step of each variant, timed in alternating rounds (one step each per round) after
    one warm-up step each, so that load from other processes on a shared machine hits all alike."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for step in steps.values():
        step()
    sync()
    spent = dict.fromkeys(steps, 0.0)
    count = dict.fromkeys(steps, 0)
    while min(count.values()) < min_steps or min(spent.values()) < min_s:
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            sync()
            spent[name] += time.perf_counter() - t0
            count[name] += 1
    return {name: spent[name] / count[name] for name in steps}


def _steps(spec: dict[str, Any], sets: dict, device: torch.device, ours: bool, bf16: bool = False,
           channels_last: bool = False, compile_: bool = False) -> tuple[Callable[[], None], FaceSwapModel]:
    torch.manual_seed(0)
    cfg = ModelConfig(spec["face_size"], spec["encoder_width"], spec["decoder_width"], spec["bottleneck"], IDS)
    model = build_model(cfg).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    fwd = torch.compile(model) if compile_ else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    samplers = {n: Sampler(sets[n].train_idx, i) for i, n in enumerate(IDS)}
    gen = torch.Generator(device=device).manual_seed(0)
    wmap = weight_map(cfg.face_size, 3.0, device)
    aug = AugmentConfig()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=device)
        for name in IDS:
            x = sets[name].batch(samplers[name].next(spec["batch"]))
            if ours:
                inp, tgt, w = augment(x, wmap, aug, gen)
            else:
                inp, tgt, w = x, x, None
            if channels_last:
                inp = inp.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
                y = fwd(inp, name)
            loss = masked_loss(y, tgt, w)[0] if ours else F.mse_loss(y.float(), tgt)
            total = total + loss
        total.backward()
        opt.step()

    return step, model


def _flops_per_step(spec: dict[str, Any], device: torch.device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    cfg = ModelConfig(spec["face_size"], spec["encoder_width"], spec["decoder_width"], spec["bottleneck"], IDS)
    model = build_model(cfg).to(device)
    counter = FlopCounterMode(display=False)
    with counter:
        for name in IDS:
            model(torch.rand(spec["batch"], 3, cfg.face_size, cfg.face_size, device=device), name).mean().backward()
    return float(counter.get_total_flops())


def run(min_seconds: float = 6.0) -> dict[str, dict[str, Any]]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, portrait in zip(IDS, ("astronaut", "grace_hopper"), strict=True):
            write_portrait_dataset(dataset_path(root, name), portrait, 128, tracks=4, per_track=8, seed=0)
        sets = load_dataset(root, list(IDS), 128, device=device)
        for label, spec in MODELS.items():
            per_step = spec["batch"] * len(IDS)
            cuda = device.type == "cuda"
            variants = {
                "baseline": _steps(spec, sets, device, ours=False)[0],
                "ours": _steps(spec, sets, device, ours=True, bf16=cuda)[0],
                "channels_last": _steps(spec, sets, device, ours=True, bf16=cuda, channels_last=True)[0],
            }
            if cuda:
                variants["compile"] = _steps(spec, sets, device, ours=True, bf16=True, channels_last=True,
                                             compile_=True)[0]
            secs = _time_interleaved(variants, device, min_seconds)
            # the headline is what facedag.training.loop runs: the full step in channels_last
            base_s, ours_s = secs["baseline"], secs["channels_last"]
            extra: dict[str, Any] = {
                "model": {k: v for k, v in spec.items() if k != "batch"}, "batch_per_identity": spec["batch"],
                "identities": len(IDS), "precision": "bf16 autocast" if cuda else "fp32",
                "layout": "channels_last", "ours_default_layout_egs_per_s": round(per_step / secs["ours"], 3),
            }
            if cuda:
                extra["ours_compile_egs_per_s"] = round(per_step / secs["compile"], 3)
                gpu = torch.cuda.get_device_name()
                peak = next((v for k, v in PEAK_BF16.items() if k in gpu), None)
                if peak:
                    extra["mfu"] = round(_flops_per_step(spec, device) / min(secs.values()) / peak, 4)
                extra["gpu"] = gpu
            key = "train_egs_per_s" if label == "demo" else "train_egs_per_s_128px"
            results[key] = figure(per_step / ours_s, "faces/s", "plain fp32 loop of the same model (no augmentation, "
                                  "MSE loss, AdamW)", per_step / base_s, **extra)
    return results


if __name__ == "__main__":
    for key, fig in run().items():
        print(key, fig)
