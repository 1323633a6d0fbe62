"""Class activation maps: where in the fundus the network looked for the grade it predicted.

CAM (Zhou et al., 2016): the last feature maps weighted by the head's weights of the predicted
grade, summed over channels, upsampled to the image. Exact for a network whose head reads the
average of those maps (ResNet, EfficientNet): the map's average is the score minus its bias. The
network says what its head reads at each position (`head_input_map`, retino/models/network.py):
ConvNeXt normalises the pooled vector first (a LayerNorm, for one image an affine map), which
applies position by position, so its maps add up to the score the same way. A network with no
such map (a vision transformer's tokens) gets no figure, with a warning.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
import torch
from torch.nn import functional

from retino.core.grades import GRADES
from retino.data.load.dataset import RetinopathyDataset, normalize_images
from retino.data.load.device_decode import EncodedImages
from retino.evaluation.cut_points import grades_from_outputs
from retino.models import GradingNetwork, NoActivationMap
from retino.models.heads import grades_by_rounding, is_regression

log = logging.getLogger(__name__)


def pick_per_grade(grades: list[int], per_grade: int) -> list[int]:
    """Indices of the first `per_grade` images of each grade (a fixed set, run after run)."""
    chosen: list[int] = []
    for grade in GRADES:
        chosen += [i for i, g in enumerate(grades) if g == grade][:per_grade]
    return chosen


@torch.no_grad()
def class_activation_maps(model: GradingNetwork, images: torch.Tensor,
                          cuts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(maps (B, H, W) in [0, 1], predicted grades (B,)) for normalised images (B, 3, H, W); a
    regression head's grades cut at `cuts` (its run's, fitted on validation; else rounded).
    NoActivationMap for a network whose head reads no average of feature maps."""
    model.eval()
    features = model.head_input_map(model.features(images))  # (B, C, h, w)
    logits = model.fc(features.mean(dim=(2, 3)))  # (B, 5), as forward() computes them
    predicted = logits.argmax(dim=1)
    if is_regression(logits):
        predicted = grades_by_rounding(logits) if cuts is None else torch.as_tensor(
            grades_from_outputs(logits[:, 0].cpu().numpy(), cuts), device=logits.device)
    # (B, C): the head's weights of each prediction; the ordinal and regression heads have one
    # row, the severity score or grade, which is what every grade moves with
    head = model.fc.weight
    weights = head[predicted] if len(head) > 1 else head.expand(len(predicted), -1)
    maps = torch.relu(torch.einsum("bc,bchw->bhw", weights, features))
    maps = functional.interpolate(maps[:, None], size=images.shape[-2:], mode="bilinear",
                                  align_corners=False)[:, 0]
    peak = maps.flatten(1).amax(dim=1).clamp_min(1e-8)[:, None, None]
    return (maps / peak).cpu().numpy(), predicted.cpu().numpy()


def cam_examples(model: GradingNetwork, dataset: RetinopathyDataset | EncodedImages, per_grade: int,
                 device: torch.device, cuts: np.ndarray | None = None,
                 ) -> list[tuple[np.ndarray, np.ndarray, int, int]]:
    """[(RGB image (H, W, 3) in [0, 1], map (H, W), true grade, predicted grade)] (cuts: a
    regression run's cut points)."""
    chosen = pick_per_grade(dataset.index.grades, per_grade)
    if not chosen:
        return []
    # uint8 (B, 3, H, W) on the device; the dataset's own batch (decoded there for decode=gpu)
    images = dataset.collate([dataset[i] for i in chosen])[0].to(device)
    try:
        maps, predicted = class_activation_maps(model, normalize_images(images), cuts)
    except NoActivationMap as err:
        log.warning("No class activation maps: %s", err)
        return []
    rgb = (images.float() / 255).permute(0, 2, 3, 1).cpu().numpy()
    return [(rgb[k], maps[k], dataset.index.grades[i], int(predicted[k]))
            for k, i in enumerate(chosen)]


def overlay(rgb: np.ndarray, cam: np.ndarray, weight: float = 0.4) -> np.ndarray:
    """A photograph (H, W, 3) uint8 RGB with its activation map (H, W) in [0, 1] laid over it as
    a jet heat map: (H, W, 3) uint8 BGR, ready for cv2.imwrite."""
    heat = cv2.applyColorMap(np.uint8(255 * np.clip(cam, 0, 1)), cv2.COLORMAP_JET)
    return cv2.addWeighted(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), 1 - weight, heat, weight, 0)
