"""The models stage: retino's own ResNets (torchvision's parameter names) and timm's backbones
(timm's names), the name → builder registry, freezing, and pretrained ImageNet weights. Knows no
data files and no MLflow.

`retino.models.build_model(name, num_classes=5)` is public: its state_dict equals torchvision's.
`build_network` builds any `model.name` (retino/models/builders.py).

Every module of this package is imported here, so that a network registered in a module of its
own (`@NETWORKS.register(...)`) is a `model.name` without being listed anywhere else.
"""

import importlib
import pkgutil

from retino.models.builders import NETWORKS, build_network
from retino.models.heads import HEADS
from retino.models.network import GradingNetwork, NoActivationMap, freeze_backbone
from retino.models.resnet import RESNETS, ResNet, build_model
from retino.models.timm_backbones import timm_arch

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["HEADS", "NETWORKS", "RESNETS", "GradingNetwork", "NoActivationMap", "ResNet",
           "build_model", "build_network", "freeze_backbone", "timm_arch"]
