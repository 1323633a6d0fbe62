"""The models stage: retino's own ResNets (torchvision's parameter names) and timm's backbones
(timm's names), the name → builder registry, freezing, and pretrained ImageNet weights. Knows no
data files and no MLflow.

`retino.models.build_model(name, num_classes=5)` is public: its state_dict equals torchvision's.
`build_network` builds any `model.name` (retino/models/builders.py).
"""

from retino.models.builders import NETWORKS, build_network, timm_arch
from retino.models.heads import HEADS
from retino.models.network import GradingNetwork, NoActivationMap, freeze_backbone
from retino.models.resnet import MODEL_BUILDERS, ResNet, build_model

__all__ = ["HEADS", "MODEL_BUILDERS", "NETWORKS", "GradingNetwork", "NoActivationMap", "ResNet",
           "build_model", "build_network", "freeze_backbone", "timm_arch"]
