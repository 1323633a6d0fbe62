"""The heads a model can end in (config group `head`): what its last layer says about a grade.

- classification (the lab's, the default): five scores, one per grade, a softmax apart from
  the grade probabilities.
- ordinal: DR grades are ordered, and a cumulative-logit head says so. One score s per image
  (how severe it looks) and four ordered cut points b0 <= b1 <= b2 <= b3 give
  P(grade > k) = sigmoid(s - b_k); the grade probabilities are the differences of those, never
  negative, so the head is rank-consistent by construction (the proportional-odds model,
  McCullagh 1980, of which CORAL is a cousin). It returns their logarithms: everything that
  reads five scores (the softmax of log-probabilities is the probabilities, cross-entropy on
  them is the ordinal likelihood, argmax is the likeliest grade) keeps working unchanged.
- regression: one output, the grade as a number, trained with MSE (or smooth L1) on the grade,
  as the Kaggle 2015 winners and most APTOS 2019 teams trained. It gives no probabilities: its
  grade is the output cut by four points fitted on validation to maximise kappa
  (retino/evaluation/cut_points.py), and the output itself ranks referable DR. Everything that
  reads a model's answers tells it apart by its single output column (`is_regression`).

All keep torchvision's parameter names (`fc.weight`, `fc.bias`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional

from retino.config.schema import REGRESSION_LOSSES
from retino.core.grades import NUM_GRADES
from retino.core.registry import Registry

# head.name -> the last layer's builder, (in_features, number of grades) -> module
HEADS: Registry[Callable[[int, int], nn.Module]] = Registry("head.name")


@HEADS.register("classification")
def classification_head(in_features: int, num_classes: int = NUM_GRADES) -> nn.Module:
    return nn.Linear(in_features, num_classes)


@HEADS.register("ordinal")
class CumulativeLogits(nn.Module):
    """The ordinal head: a severity score (`weight`, one row) and NUM_GRADES - 1 ordered cut
    points (`bias`: the first one, then the gaps as softplus, so they stay ordered); returns
    (B, NUM_GRADES) log-probabilities of the grades."""

    def __init__(self, in_features: int, grades: int = NUM_GRADES) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(1, in_features))
        nn.init.normal_(self.weight, std=0.01)
        # cut points start evenly spread around 0: -1.5, -0.5, 0.5, 1.5
        gaps = torch.full((grades - 2,), float(torch.log(torch.expm1(torch.tensor(1.0)))))
        self.bias = nn.Parameter(torch.cat([torch.tensor([-(grades - 2) / 2]), gaps]))

    def cut_points(self) -> torch.Tensor:
        return torch.cumsum(torch.cat([self.bias[:1], functional.softplus(self.bias[1:])]), 0)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        score = features @ self.weight.t()  # (B, 1)
        above = torch.sigmoid(score - self.cut_points())  # (B, 4): P(grade > k), decreasing in k
        ones, zeros = torch.ones_like(score), torch.zeros_like(score)
        cumulative = torch.cat([ones, above, zeros], dim=1)  # P(grade > k) for k = -1 .. 4
        probabilities = (cumulative[:, :-1] - cumulative[:, 1:]).clamp_min(1e-12)
        return probabilities.log()


@HEADS.register("regression")
def regression_head(in_features: int, num_classes: int = NUM_GRADES) -> nn.Module:
    return nn.Linear(in_features, 1)  # the grade as a number, whatever the number of grades


def make_head(name: str, in_features: int, num_classes: int = NUM_GRADES) -> nn.Module:
    """The last layer for a head name (a ConfigError listing the others for an unknown one)."""
    return HEADS[name](in_features, num_classes)


def is_regression(outputs: torch.Tensor) -> bool:
    """Whether a model's outputs (B, K) are a regression head's grade (K = 1) rather than five
    grade scores: what a model says is told apart by its shape, so no caller needs the config."""
    return outputs.shape[1] == 1


def grades_by_rounding(outputs: torch.Tensor) -> torch.Tensor:
    """(B,) grades of a regression head's outputs (B, 1), rounded: the cut points 0.5 .. 3.5,
    used where none were fitted (training accuracy, a run without a validation split)."""
    return outputs[:, 0].round().clamp(0, NUM_GRADES - 1).long()


class GradeRegressionLoss(nn.Module):
    """The regression head's loss: MSE (or smooth L1) between its output and the grade; with
    class weights, each image's error weighted by its grade's weight and normalised by their
    sum, as nn.CrossEntropyLoss weights them."""

    def __init__(self, kind: str = "mse", weight: torch.Tensor | None = None) -> None:
        super().__init__()
        if kind not in REGRESSION_LOSSES:
            raise ValueError(f"head.loss={kind!r} is not valid; choose one of: "
                             f"{', '.join(REGRESSION_LOSSES)}.")
        self.kind = kind
        self.register_buffer("weight", weight)

    def forward(self, outputs: torch.Tensor, grades: torch.Tensor) -> torch.Tensor:
        target = grades.to(outputs.dtype)
        if self.kind == "mse":
            errors = functional.mse_loss(outputs[:, 0], target, reduction="none")
        else:
            errors = functional.smooth_l1_loss(outputs[:, 0], target, reduction="none")
        if self.weight is None:
            return errors.mean()
        weights = self.weight[grades]
        return (weights * errors).sum() / weights.sum()
