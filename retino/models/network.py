"""What every grading network offers the rest of retino, whichever family it comes from
(retino's ResNets, timm's backbones): feature maps, a head `fc`, and a backbone that can be frozen.

    forward(images) = fc(head input)   where   head input = head_input_map(features).mean((2, 3))

`features(images)` is the last feature map (B, C, h, w); `head_input_map` spreads the vector the
head reads over those positions, so that its average is that vector (the identity for a network
that average-pools straight into `fc`). Class activation maps (retino/evaluation/cam.py) are the
head's weights applied to it, position by position.
"""

from __future__ import annotations

import torch
from torch import nn

HEAD = "fc"  # the head's module name in every network: retino's, not the pretrained file's
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


class NoActivationMap(ValueError):
    """The network's head does not read an average of feature maps: it has no exact CAM."""


class GradingNetwork(nn.Module):
    """The interface above, and a train() that keeps a frozen backbone's BatchNorm fixed."""

    backbone_frozen = False  # set by freeze_backbone

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> the last feature map (B, C, h, w)."""
        raise NotImplementedError

    def head_input_map(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) whose average over positions is what `fc` reads."""
        return features

    def pretrained_classifier(self) -> tuple[str, ...]:
        """Module names of the classifier in a pretrained weights file, replaced by `fc`."""
        return (HEAD,)

    def train(self, mode: bool = True) -> GradingNetwork:
        """Like nn.Module.train, but a frozen backbone keeps its BatchNorm statistics fixed."""
        super().train(mode)
        if self.backbone_frozen:
            head = set(getattr(self, HEAD).modules())
            for module in self.modules():
                if isinstance(module, _BATCH_NORMS) and module not in head:
                    module.eval()
        return self


def freeze_backbone(model: GradingNetwork) -> None:
    """Only the head `fc` learns: backbone weights get no gradient, BN statistics stay fixed."""
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith(f"{HEAD}.")
    model.backbone_frozen = True
    model.train(model.training)  # re-apply the mode so BN layers switch to eval now
