"""A model's answers on a batch of normalised images, whoever asks (training's evaluation, the
grader, the exported file): the five grade probabilities, or a regression head's output, and
their mean over test-time flips.
"""

from __future__ import annotations

import torch
from torch import nn

from retino.models.heads import is_regression

FLIPS = ((), (3,), (2,), (2, 3))  # test-time augmentation: as is, mirrored, upside down, both


def answers_of(outputs: torch.Tensor) -> torch.Tensor:
    """(B, 5) the softmax of a head's five scores, or (B, 1) a regression head's output as is."""
    return outputs if is_regression(outputs) else outputs.softmax(dim=1)


def head_answers(model: nn.Module, images: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """(B, 5) grade probabilities of normalised images, or (B, 1) a regression head's output;
    with tta, the mean of the four flipped passes (a fundus has no preferred orientation, and
    training flips it too)."""
    if not tta:
        return answers_of(model(images).float())
    return torch.stack([answers_of(model(images.flip(dims) if dims else images).float())
                        for dims in FLIPS]).mean(dim=0)
