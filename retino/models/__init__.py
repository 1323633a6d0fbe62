"""The models stage: retino's own ResNets (torchvision's parameter names), the name → builder
registry, freezing, and pretrained ImageNet weights. Knows no data files and no MLflow.

`retino.models.build_model(name, num_classes=5)` is public: its state_dict equals torchvision's.
"""

from retino.models.heads import HEADS
from retino.models.resnet import MODEL_BUILDERS, ResNet, build_model, freeze_backbone

__all__ = ["HEADS", "MODEL_BUILDERS", "ResNet", "build_model", "freeze_backbone"]
