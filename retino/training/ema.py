"""An exponential moving average of a model's weights (EMA): after every optimizer step,
average = decay * average + (1 - decay) * weights. The average, not the last step's weights, is
what a run evaluates, selects, saves and serves: it smooths the noise of the last steps, a cheap
and standard gain (decay 0.999 averages over about the last thousand steps).

The first updates use a smaller decay, min(decay, (1 + n) / (10 + n)) after n updates, as
TensorFlow's ExponentialMovingAverage and timm's ModelEma do: 0.999 from the first step would
keep the random initial weights in the average for thousands of steps (82 % of it after 200).
The floating-point parameters and buffers (BatchNorm's running statistics) are averaged; integer
buffers (BatchNorm's batch count) follow the model. The average lives beside the model, on its
device, and is swapped in for evaluation; a checkpoint keeps it, so a resumed run continues the
same average.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class WeightAverage:
    """The moving average of a model's floating-point state."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"ema_decay={decay} must be between 0 and 1 (e.g. 0.999).")
        self.decay = decay
        self.updates = 0
        self.average = {name: tensor.detach().clone() for name, tensor in _averaged(model)}

    def current_decay(self) -> float:
        """The decay of the next update: smaller at first (see the module's docstring)."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step of the average, on the device (no host sync: a GPU never waits for it)."""
        current = [tensor.detach() for _, tensor in _averaged(model)]
        torch._foreach_lerp_(list(self.average.values()), current, 1.0 - self.current_decay())
        self.updates += 1

    @contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[None]:
        """The model holds the average inside the block, its training weights again after."""
        state = model.state_dict()
        kept = {name: state[name].detach().clone() for name in self.average}
        self.copy_to(model)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, tensor in kept.items():
                    state[name].copy_(tensor)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """The average into the model's own tensors (for good: the final weights)."""
        state = model.state_dict()
        for name, tensor in self.average.items():
            state[name].copy_(tensor)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates,
                "average": {name: tensor.detach().cpu() for name, tensor in self.average.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state.get("updates", 0))
        for name, tensor in state["average"].items():
            self.average[name].copy_(tensor)


def _averaged(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """The entries of the state the average covers: every floating-point one."""
    return ((name, tensor) for name, tensor in model.state_dict().items()
            if tensor.is_floating_point())
