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

Both keep torchvision's parameter names (`fc.weight`, `fc.bias`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

from retino.core.grades import NUM_GRADES


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


HEADS = ("classification", "ordinal")  # head.name


def make_head(name: str, in_features: int, num_classes: int = NUM_GRADES) -> nn.Module:
    """The last layer for a head name (ValueError for an unknown one: validation lists them)."""
    if name == "classification":
        return nn.Linear(in_features, num_classes)
    if name == "ordinal":
        return CumulativeLogits(in_features, num_classes)
    raise ValueError(f"head={name!r} is not valid; choose one of: {', '.join(HEADS)}.")
