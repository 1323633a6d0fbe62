"""The networks `model.name` chooses: retino's own ResNets (the default, torchvision's names) and
timm's backbones, by name -> builder; `model=timm` builds any timm architecture named by
`model.arch`."""

from __future__ import annotations

from collections.abc import Callable

from retino.config.schema import TIMM_MODEL
from retino.core.errors import ConfigError
from retino.core.grades import NUM_GRADES
from retino.models.network import GradingNetwork
from retino.models.resnet import MODEL_BUILDERS, build_model
from retino.models.timm_backbones import timm_network

# model.name -> timm architecture (pretrained: timm's default tag; docs/choosing-what-to-run.md)
TIMM_NAMED = {"efficientnet_b0": "efficientnet_b0", "efficientnet_b3": "efficientnet_b3",
              "convnext_tiny": "convnext_tiny"}

Builder = Callable[[str, int, "str | None"], GradingNetwork]  # (head, num_classes, arch)


def _own(name: str) -> Builder:
    return lambda head, num_classes, arch: build_model(name, num_classes, head)


def _timm(arch: str) -> Builder:
    return lambda head, num_classes, _: timm_network(arch, head, num_classes)


NETWORKS: dict[str, Builder] = {
    **{name: _own(name) for name in MODEL_BUILDERS},
    **{name: _timm(arch) for name, arch in TIMM_NAMED.items()},
    TIMM_MODEL: lambda head, num_classes, arch: timm_network(arch, head, num_classes),
}


def timm_arch(name: str, arch: str | None = None) -> str | None:
    """The timm architecture of model.name (and model.arch); None for retino's own ResNets."""
    return arch if name == TIMM_MODEL else TIMM_NAMED.get(name)


def build_network(name: str, head: str = "classification", arch: str | None = None,
                  num_classes: int = NUM_GRADES) -> GradingNetwork:
    """The network `model.name` (and `model.arch` for model=timm) names, randomly initialised,
    ending in the head of the given kind."""
    if name not in NETWORKS:
        raise ConfigError(f"model.name={name!r} is not valid; choose one of: "
                          f"{', '.join(NETWORKS)}.")
    return NETWORKS[name](head, num_classes, arch)
