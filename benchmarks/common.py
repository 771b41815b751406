"""What every benchmark shares: the device string and the figure format of results.json."""

from __future__ import annotations

import os
import platform
import resource
from pathlib import Path
from typing import Any

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"


def device_name(gpu: bool = False) -> str:
    """Name the machine a figure was measured on, so figures from different machines never mix;
    `gpu`: the figure ran on the first CUDA GPU, named too."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    name = f"cpu: {os.cpu_count()} cores, {model}"
    if gpu:
        import torch

        name += f", gpu: {torch.cuda.get_device_name()}"
    return name


def figure(value: float, unit: str, baseline_what: str, baseline_value: float | None,
           baseline_unit: str | None = None, gpu: bool = False, **extra: Any) -> dict[str, Any]:
    """One results.json entry: the figure, its unit, the device (`gpu`: with the GPU it ran on)
    and the side-by-side baseline."""
    return {
        "value": round(float(value), 3),
        "unit": unit,
        "device": device_name(gpu),
        "baseline": {
            "what": baseline_what,
            "value": None if baseline_value is None else round(float(baseline_value), 3),
            "unit": baseline_unit or unit,
        },
        **extra,
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
