"""The networks `model.name` chooses, by name -> builder (`NETWORKS`, a retino.core.registry
Registry): retino's own ResNets register themselves in resnet.py, timm's backbones in
timm_backbones.py (`model=timm` builds any timm architecture named by `model.arch`).

A network of one's own is a module in this package that registers its builder, and a file in
conf/model/ (docs/architecture.md, "A model"): retino/models/__init__.py imports every module of
the package, so nothing else lists it."""

from __future__ import annotations

from collections.abc import Callable

from retino.core.grades import NUM_GRADES
from retino.core.registry import Registry
from retino.models.network import GradingNetwork

# (head.name, number of grades, model.arch: None but for model=timm) -> a randomly initialised
# network ending in that head
NetworkBuilder = Callable[[str, int, "str | None"], GradingNetwork]
NETWORKS: Registry[NetworkBuilder] = Registry("model.name")


def build_network(name: str, head: str = "classification", arch: str | None = None,
                  num_classes: int = NUM_GRADES) -> GradingNetwork:
    """The network `model.name` (and `model.arch` for model=timm) names, randomly initialised,
    ending in the head of the given kind."""
    return NETWORKS[name](head, num_classes, arch)
