"""Batches of training faces, drawn so that a resumed run draws exactly what an uninterrupted one would."""

from __future__ import annotations

from typing import Any

import torch


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


