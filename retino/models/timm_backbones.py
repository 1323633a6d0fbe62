"""Backbones from timm (EfficientNet, ConvNeXt, or any timm architecture by name) ending in
retino's head, with the interface of retino/models/network.py.

The network is timm's own model object, created without its classifier (num_classes=0), so its
parameters keep timm's names and a timm-format weights file (Hugging Face's timm/<arch>.<tag>)
loads into it as it is. Its class becomes a subclass of timm's class that mixes in
`TimmNetwork` (a wrapper module would prefix every name); the head is retino's `fc`, reading
what timm's own head computes before its classifier (`forward_head(..., pre_logits=True)`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import torch
from torch import nn

from retino.config.schema import TIMM_MODEL
from retino.core.errors import ConfigError
from retino.core.grades import NUM_GRADES
from retino.models.builders import NETWORKS, NetworkBuilder
from retino.models.heads import make_head
from retino.models.network import GradingNetwork, NoActivationMap

_POOLED_CHECK_TOLERANCE = 1e-4  # relative, fp32: the map's average must be what the head reads


class TimmNetwork(GradingNetwork):
    """Mixed into a timm model's class by timm_network(); not instantiated on its own."""

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_features(images)  # (B, C, h, w) for a convolutional network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pooled = self.forward_head(self.forward_features(images), pre_logits=True)  # (B, C')
        return self.fc(pooled)

    def pretrained_classifier(self) -> tuple[str, ...]:
        names = self.pretrained_cfg.get("classifier") or ()
        return (names,) if isinstance(names, str) else tuple(names)

    def head_input_map(self, features: torch.Tensor) -> torch.Tensor:
        """Average pooling spreads as it is; a LayerNorm after the pooling (ConvNeXt's head) is,
        for one image, an affine map of the pooled vector (its mean and spread over channels are
        fixed numbers), so it applies position by position and still averages to what the head
        reads. Checked against timm's own head: any other head has no exact map."""
        arch = self.pretrained_cfg.get("architecture", type(self).__name__)
        if features.ndim != 4:
            raise NoActivationMap(f"{arch} gives tokens (B, N, C), not feature maps.")
        norm = getattr(getattr(self, "head", None), "norm", None)
        spread = _layer_norm_spread(norm, features) if isinstance(norm, nn.LayerNorm) \
            else features
        read = self.forward_head(features, pre_logits=True)  # (B, C'): what fc reads
        if read.shape != spread.shape[:2] or not torch.allclose(
                spread.mean(dim=(2, 3)), read, rtol=_POOLED_CHECK_TOLERANCE,
                atol=_POOLED_CHECK_TOLERANCE * float(read.abs().max())):
            raise NoActivationMap(f"{arch}'s head does more than average its feature maps "
                                  "(and normalise them), so no map adds up to its scores.")
        return spread


def _layer_norm_spread(norm: nn.LayerNorm, features: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w): norm's affine map of the pooled vector, applied at every position."""
    pooled = features.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    mean = pooled.mean(dim=1, keepdim=True)  # (B, 1, 1, 1): the image's fixed numbers
    scale = torch.rsqrt(pooled.var(dim=1, unbiased=False, keepdim=True) + norm.eps)
    weight = norm.weight[:, None, None] if norm.weight is not None else 1.0
    bias = norm.bias[:, None, None] if norm.bias is not None else 0.0
    return (features - mean) * scale * weight + bias


@functools.cache
def _retino_class(timm_class: type[nn.Module]) -> type:
    """timm's class with retino's interface mixed in (one class per timm class)."""
    return type(f"Retino{timm_class.__name__}", (TimmNetwork, timm_class),
                {"__module__": __name__})


def timm_network(arch: str | None, head: str = "classification",
                 num_classes: int = NUM_GRADES) -> TimmNetwork:
    """timm's `arch` (a name, optionally with its pretrained tag: efficientnet_b0.ra_in1k),
    randomly initialised, ending in retino's head of the given kind."""
    import timm  # here, not at the top: timm adds most of a second to every run that needs it not

    if not arch:
        raise ConfigError(f"model={TIMM_MODEL} needs model.arch=<a timm architecture>, e.g. "
                          "model.arch=efficientnet_b4.")
    if not timm.is_model(arch):
        raise ConfigError(f"model.arch={arch!r} is not a timm model; list them with "
                          "python -c \"import timm; print(timm.list_models('*net*'))\".")
    model = timm.create_model(arch, pretrained=False, num_classes=0)
    in_features = getattr(model, "head_hidden_size", None) or model.num_features
    model.__class__ = _retino_class(type(model))
    model.fc = make_head(head, in_features, num_classes)  # its width is the head's to choose
    return model


# model.name -> timm architecture (pretrained: timm's default tag; docs/choosing-what-to-run.md)
TIMM_NAMED = {"efficientnet_b0": "efficientnet_b0", "efficientnet_b3": "efficientnet_b3",
              "convnext_tiny": "convnext_tiny"}


def timm_arch(name: str, arch: str | None = None) -> str | None:
    """The timm architecture of model.name (and model.arch); None for retino's own ResNets."""
    return arch if name == TIMM_MODEL else TIMM_NAMED.get(name)


def _timm_builder(name: str) -> NetworkBuilder:
    return lambda head, num_classes, arch: timm_network(timm_arch(name, arch), head, num_classes)


for _name in (*TIMM_NAMED, TIMM_MODEL):
    NETWORKS.add(_name, _timm_builder(_name))


class TimmArchitectures:
    """Every architecture timm knows (without pretrained tags), for validation's messages: read
    from timm when iterated, so that a run that names no timm model never imports timm."""

    def __iter__(self) -> Iterator[str]:
        import timm

        return iter(timm.list_models())
