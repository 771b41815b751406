"""One model on N processes (GPUs, or CPU processes in tests) through torchrun: DistributedDataParallel.

How many: the environment variable FACEDAG_GPUS (not a param, so that the train stage's DVC
hash does not change with the machine that runs it). With FACEDAG_GPUS > 1 the train stage
starts `torchrun --standalone --nproc_per_node N -m stages.train` itself (`launch`); for several
machines, run torchrun on each with one rendezvous (README "Training on GPUs"): every process
then finds RANK/WORLD_SIZE/LOCAL_RANK in its environment and joins (`join`).

The rules that keep N processes one run:
- every rank sees its share of one global batch: all ranks hold the same samplers and the same
  CPU augmentation generator, draw the whole batch and keep their slice, so the data order and
  the generators' states are the same on every rank and rank 0's checkpoint is valid for all
  (a resume with the same world size is bit-exact on the CPU);
- only rank 0 writes (checkpoints, best, previews, curves, the model) and evaluates;
- stops (signal, time budget, patience) are decided jointly each step (`agree`, a MAX over a
  CPU gloo group, so it never synchronises the GPU), so no rank waits forever in a collective
  another rank has left; a SIGTERM through torchrun (which forwards it to every worker and
  waits 30 s before SIGKILL) finishes the step, checkpoints on rank 0 and exits.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from facedag.records import StageFailed

GPUS_ENV = "FACEDAG_GPUS"


@dataclass
class Dist:
    """This process's place: rank `rank` of `world` (1: no distribution), `local_rank` on its machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    control: Any = None  # a gloo process group for host-side decisions

    @property
    def main(self) -> bool:
        """Rank 0: the one that evaluates and writes."""
        return self.rank == 0

    def agree(self, code: int) -> int:
        """The largest of every rank's `code` (0 = go on), so that all ranks take the same decision."""
        if self.world == 1:
            return code
        t = torch.tensor([code], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.control)
        return int(t.item())

    def share(self, global_batch: int) -> slice:
        """This rank's rows of a global batch of `global_batch` faces (contiguous, equal shares)."""
        n = global_batch // self.world
        return slice(self.rank * n, (self.rank + 1) * n)

    def gather(self, value: Any) -> list[Any]:
        """`value` of every rank, in rank order (a Python object over the control group)."""
        if self.world == 1:
            return [value]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, value, group=self.control)
        return out

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every rank."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def join(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group torchrun set up (RANK/WORLD_SIZE in the environment), or a Dist of 1.

    Under CUDA each process takes the GPU of its LOCAL_RANK and NCCL carries the gradients;
    on the CPU gloo does. Returns the Dist and the device this rank trains on.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise StageFailed(f"rank {rank} wants GPU {local} but this machine has {torch.cuda.device_count()}: "
                              f"lower --nproc_per_node or {GPUS_ENV}")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
        control = dist.new_group(backend="gloo")
    else:
        dist.init_process_group("gloo")
        control = dist.group.WORLD
    return Dist(rank, world, local, control), device


def weights_digest(*modules: torch.nn.Module) -> str:
    """sha256 of the parameters' bytes (of every module given, in order): equal on every rank when
    data parallelism kept them in step."""
    h = hashlib.sha256()
    for p in (p for m in modules for p in m.parameters()):
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def gpus_wanted() -> int:
    """FACEDAG_GPUS as a count (default 1); StageFailed on a value that is not one."""
    raw = os.environ.get(GPUS_ENV, "").strip()
    if not raw:
        return 1
    if not raw.isdigit() or int(raw) < 1:
        raise StageFailed(f"{GPUS_ENV}={raw!r} must be a whole number of processes >= 1")
    return int(raw)


def under_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def launch(nproc: int, module: str, args: list[str]) -> int:
    """Run `module` in `nproc` processes through torchrun on this machine and wait.

    SIGTERM and SIGINT are passed on to torchrun (which passes them on to every rank and gives
    them 30 s to checkpoint); the return is the exit status a stage should end with: 128 + the
    signal when one stopped it (as the single-process stage does), else torchrun's.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", module, *args]
    child = subprocess.Popen(cmd)
    got: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        got.append(signum)
        child.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        rc = child.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return 128 + got[0] if got else rc
