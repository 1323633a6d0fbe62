"""The epoch a run keeps: the best so far by a validation metric, with a CPU copy of its
weights (saved in every checkpoint, so a resumed run keeps choosing from all its epochs)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from retino.core.metric_names import VAL_QWK


@dataclass
class Selection:
    """The epoch whose weights a run keeps: the best so far by a validation metric (lowest for
    a loss, highest otherwise; the earlier epoch on a tie), with a CPU copy of its weights."""

    metric: str = VAL_QWK
    epoch: int = 0
    score: float = float("nan")
    weights: dict[str, torch.Tensor] | None = None

    def _better(self, value: float) -> bool:
        if self.epoch == 0 or (np.isnan(self.score) and not np.isnan(value)):
            return True
        return value < self.score if self.metric.endswith("loss") else value > self.score

    def update(self, row: dict[str, float], model: nn.Module) -> None:
        if not self._better(row[self.metric]):
            return
        self.epoch, self.score = int(row["epoch"]), float(row[self.metric])
        if self.weights is None:  # a copy: on a CPU, cpu_state_dict shares the live tensors
            self.weights = {k: v.detach().to("cpu", copy=True)
                            for k, v in model.state_dict().items()}
        else:  # into the same buffers: no memory churn at each better epoch
            for name, tensor in model.state_dict().items():
                self.weights[name].copy_(tensor.detach())

    def state(self) -> dict:
        return {"metric": self.metric, "epoch": self.epoch, "score": self.score}

    def stale(self, epoch: int, patience: int | None) -> bool:
        """Whether `patience` epochs up to `epoch` have passed without a better one: early
        stopping. The count runs from the best epoch, which a resumed run restores, so a
        resume never restarts it."""
        return patience is not None and self.epoch > 0 and epoch - self.epoch >= patience
