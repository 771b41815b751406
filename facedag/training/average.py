"""The moving average of the weights that is scored, saved and converted."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from facedag.training.model import FaceSwapModel


class WeightAverage:
    """An exponential moving average of the model's weights: the model that is scored, saved
    and converted.

    Why: at a constant learning rate the raw weights keep circling the minimum (on the samples
    the held-out SSIM of consecutive evaluations swings by 0.03-0.05); their average sits nearer
    its centre, as a decayed learning rate would, without a schedule that must know when the run
    ends (runs stop on a time budget, and a resumed run goes on). The decay warms up as
    (1 + step) / (10 + step), so that a short run is not averaged with its random start.
    `decay` 0 keeps the raw weights (`model` is then the trained model itself).
    """

    def __init__(self, model: FaceSwapModel, decay: float) -> None:
        self.decay = decay
        self.model = model
        if decay > 0:
            self.model = copy.deepcopy(model)
            self.model.requires_grad_(False)

    def update(self, trained: FaceSwapModel, step: int) -> None:
        """Move the average toward `trained` after its step number `step` (1-based)."""
        if self.model is trained:
            return
        d = min(self.decay, (1 + step) / (10 + step))
        with torch.no_grad():  # one batched op over every tensor (one kernel launch per few tensors on a GPU)
            torch._foreach_lerp_(list(self.model.parameters()), list(trained.parameters()), 1.0 - d)

    def state_dict(self) -> dict[str, torch.Tensor] | None:
        if self.decay <= 0:
            return None
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor] | None, trained: FaceSwapModel,
                        log: Callable[[str], None]) -> None:
        """Continue the checkpoint's average; a checkpoint without one (written with ema 0, or
        before it existed) starts it from the trained weights."""
        if self.model is trained:
            return
        if state is None:
            log("the checkpoint has no weight average: starting it from its weights")
            self.model.load_state_dict(trained.state_dict())
        else:
            self.model.load_state_dict(state)


