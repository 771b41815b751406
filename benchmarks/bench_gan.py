"""The adversarial loss's cost: the training step of the demo preset with `train.gan_weight` on
(from step 0: the generator's term through each identity's discriminator, and the
discriminators' own step) beside the same step with it off, timed in alternating rounds in the
same run (benchmarks.bench_train's harness and faces, 128 px as params.yaml's base.face_size).

`overhead` = on / off - 1 in step time, the median over rounds of the per-round ratio.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks.bench_train import FACE, IDS, make_trainer, mean, ours_step, overhead, time_interleaved, write_faces
from benchmarks.common import figure


def run(min_seconds: float = 6.0) -> dict[str, dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_faces(root, FACE)
        off = make_trainer(root, FACE, {"preset": "demo"}, "cpu")
        on = make_trainer(root, FACE, {"preset": "demo", "gan_weight": 0.1, "gan_start": 0}, "cpu")
        assert off.gan is None and on.gan is not None
        times = time_interleaved({"on": ours_step(on), "off": ours_step(off)}, on.device, min_seconds)
        secs = {k: mean(v) for k, v in times.items()}
        return {"train_gan_step_s": figure(
            secs["on"], "s/step", "the same step with train.gan_weight 0 (off)", secs["off"],
            overhead=round(overhead(times["on"], times["off"]), 4), rounds=len(times["on"]), preset="demo",
            face_size=FACE, batch_per_identity=on.batch, identities=len(IDS),
            discriminator_params=on.gan.params_count(),
            generator_params=sum(p.numel() for p in on.model.parameters()), torch_threads=torch.get_num_threads(),
        )}  # fmt: skip


if __name__ == "__main__":
    for key, fig in run().items():
        print(key, fig)
