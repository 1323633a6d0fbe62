"""ResNet for DR grading, written here with torchvision's parameter names and shapes.

Same names as torchvision's `models/resnet.py` (conv1, bn1, layer1..4, fc, downsample.0/1 ...), so
its ImageNet state dicts load with strict=True. Bottleneck strides on the 3x3 conv ("ResNet v1.5").
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from retino.core.grades import NUM_GRADES
from retino.core.registry import Registry
from retino.models.builders import NETWORKS
from retino.models.heads import make_head
from retino.models.network import GradingNetwork


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (ResNet18/34)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride, "v1.5"), 1x1 expand by 4 (ResNet50/101/152)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


Block = type[BasicBlock] | type[Bottleneck]


class ResNet(GradingNetwork):
    """Stem, four stages of residual blocks, global average pool and a linear head `fc`."""

    def __init__(self, block: Block, layers: list[int], num_classes: int = NUM_GRADES) -> None:
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_stage(block, 64, layers[0], stride=1)
        self.layer2 = self._make_stage(block, 128, layers[1], stride=2)
        self.layer3 = self._make_stage(block, 256, layers[2], stride=2)
        self.layer4 = self._make_stage(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        self._init_weights()

    def _make_stage(self, block: Block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.in_planes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.in_planes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        stage = [block(self.in_planes, planes, stride, downsample)]
        self.in_planes = planes * block.expansion
        stage += [block(self.in_planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> last conv block's feature map (B, C, H/32, W/32)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))  # (B, num_classes)


# retino's own ResNets, name -> (number of classes) -> ResNet: the networks CIFAR-10 pretrains
# (pretrain=cifar10), each also a model.name (NETWORKS).
RESNETS: Registry[Callable[[int], ResNet]] = Registry("build_model's name")


def _resnet(name: str) -> Callable[[Callable[[int], ResNet]], Callable[[int], ResNet]]:
    """Registers a ResNet under `name`, in RESNETS and as a model.name."""
    def add(builder: Callable[[int], ResNet]) -> Callable[[int], ResNet]:
        RESNETS.add(name, builder)
        NETWORKS.add(name, lambda head, num_classes, arch: build_model(name, num_classes, head))
        return builder
    return add


@_resnet("resnet18")
def resnet18(num_classes: int = NUM_GRADES) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes)


@_resnet("resnet34")
def resnet34(num_classes: int = NUM_GRADES) -> ResNet:
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes)


@_resnet("resnet50")
def resnet50(num_classes: int = NUM_GRADES) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes)


@_resnet("resnet101")
def resnet101(num_classes: int = NUM_GRADES) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 23, 3], num_classes)


@_resnet("resnet152")
def resnet152(num_classes: int = NUM_GRADES) -> ResNet:
    return ResNet(Bottleneck, [3, 8, 36, 3], num_classes)


def build_model(name: str, num_classes: int = NUM_GRADES,
                head: str = "classification") -> ResNet:
    """The ResNet called `name`, randomly initialised, ending in a `num_classes`-way head of
    the given kind (retino/models/heads.py)."""
    model = RESNETS[name](num_classes)
    if head != "classification":
        model.fc = make_head(head, model.fc.in_features, num_classes)
    return model

