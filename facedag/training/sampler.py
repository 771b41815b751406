"""Batches of training faces, drawn so that a resumed run draws exactly what an uninterrupted one would."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

# dedupe's yaw axis (facedag.curation.coverage.YAW): past +-60 degrees one eye is hidden, so those
# faces share the end bins. Written out, not imported: train would otherwise rerun whenever
# the curation grids' module changes.
YAW_RANGE = (-60.0, 60.0)


def yaw_bin(yaw: np.ndarray, bins: int) -> np.ndarray:
    """Bin (0 .. bins-1) of each yaw in degrees over YAW_RANGE cut evenly, the end bins open;
    NaN (no yaw) goes to the middle bin, as in dedupe's grid."""
    lo, hi = YAW_RANGE
    with np.errstate(invalid="ignore"):
        idx = np.floor((np.asarray(yaw, np.float64) - lo) / ((hi - lo) / bins))
    return np.clip(np.where(np.isnan(idx), bins // 2, idx), 0, bins - 1).astype(np.int64)


class Sampler:
    """Batches of training indices: a fresh permutation per epoch from its own generator.

    Its whole state (generator, current permutation, position) goes into the checkpoint, so a
    resumed run draws exactly the faces the uninterrupted run would have.
    """

    def __init__(self, indices: torch.Tensor, seed: int) -> None:
        self.indices = indices.cpu()
        self.gen = torch.Generator().manual_seed(int(seed))
        self.perm = torch.randperm(len(self.indices), generator=self.gen)
        self.pos = 0

    def next(self, n: int) -> torch.Tensor:
        out = []
        while n > 0:
            if self.pos >= len(self.perm):
                self.perm = torch.randperm(len(self.indices), generator=self.gen)
                self.pos = 0
            take = min(n, len(self.perm) - self.pos)
            out.append(self.perm[self.pos : self.pos + take])
            self.pos += take
            n -= take
        return self.indices[torch.cat(out)]

    def state_dict(self) -> dict[str, Any]:
        return {"gen": self.gen.get_state(), "perm": self.perm.clone(), "pos": int(self.pos)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["gen"])
        self.perm = state["perm"].clone()
        self.pos = int(state["pos"])


class YawBinSampler:
    """Batches drawn evenly across yaw bins (`train.uniform_yaw`): each face of a batch picks a
    non-empty bin uniformly, then takes the next face of that bin's own permutation (a fresh one
    whenever the bin runs out), so the few profile faces of a mostly frontal set are seen as often
    as a whole bin of frontal ones, and within a bin every face comes before any repeats.

    The bins are dedupe's yaw axis (YAW_RANGE, +-60 degrees, the end bins open) cut into
    `bins` (yaw_bin); a face without a yaw (NaN) goes to the middle bin. Empty bins are
    skipped. Its whole state (generator, every bin's permutation and position) goes into the
    checkpoint, so a resumed run draws what the uninterrupted one would have.
    """

    def __init__(self, indices: torch.Tensor, yaw: torch.Tensor, bins: int, seed: int) -> None:
        self.indices = indices.cpu()
        of_face = torch.from_numpy(yaw_bin(yaw.cpu().double().numpy(), bins))
        self.counts = [int((of_face == b).sum()) for b in range(bins)]
        # the members of each non-empty bin (positions into `indices`)
        self.members = [torch.nonzero(of_face == b).flatten() for b in range(bins) if self.counts[b]]
        self.gen = torch.Generator().manual_seed(int(seed))
        self.perms = [torch.randperm(len(m), generator=self.gen) for m in self.members]
        self.pos = [0] * len(self.members)

    def next(self, n: int) -> torch.Tensor:
        picks = torch.randint(len(self.members), (n,), generator=self.gen).tolist()
        out = []
        for b in picks:
            if self.pos[b] >= len(self.perms[b]):
                self.perms[b] = torch.randperm(len(self.members[b]), generator=self.gen)
                self.pos[b] = 0
            out.append(int(self.members[b][self.perms[b][self.pos[b]]]))
            self.pos[b] += 1
        return self.indices[torch.tensor(out, dtype=torch.long)]

    def state_dict(self) -> dict[str, Any]:
        return {"gen": self.gen.get_state(), "perms": [p.clone() for p in self.perms], "pos": list(self.pos),
                "counts": list(self.counts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A YawBinSampler's state over the same bins; anything else (the plain Sampler's, from
        a run with uniform_yaw off, or other bins) is refused with ValueError (see make_sampler)."""
        if "perms" not in state or list(state["counts"]) != self.counts:
            raise ValueError("not a yaw-bin sampler state over these bins")
        self.gen.set_state(state["gen"])
        self.perms = [p.clone() for p in state["perms"]]
        self.pos = [int(p) for p in state["pos"]]


def make_sampler(indices: torch.Tensor, yaw: torch.Tensor | None, uniform_yaw: bool, bins: int,
                 seed: int) -> Sampler | YawBinSampler:
    """The identity's sampler: uniform over yaw bins (train.uniform_yaw, with the faces' yaw), else
    uniform over faces."""
    if uniform_yaw and yaw is not None:
        return YawBinSampler(indices, yaw, bins, seed)
    return Sampler(indices, seed)


def restore_sampler(sampler: Sampler | YawBinSampler, state: dict[str, Any], step: int, seed: int,
                    log: Callable[[str], None], name: str) -> None:
    """Load a checkpoint's sampler state; when it is the other kind's (train.uniform_yaw or
    yaw_bins changed between runs) reseed from the seed and the step, and say so: training goes
    on, drawing in the new way."""
    try:
        sampler.load_state_dict(state)
    except (KeyError, ValueError):
        sampler.gen.manual_seed(int(seed) + int(step))
        log(f"{name}: the checkpoint's sampler is another kind (train.uniform_yaw or yaw_bins changed): "
            f"reseeded the sampler from the seed and step {step}")
