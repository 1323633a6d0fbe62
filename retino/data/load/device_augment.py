"""Augmentations that run on the training device, a batch at a time: rotation and colour jitter,
the two that cost a loader worker most (about 4 and 2 ms per 512 px image on a CPU core; a GPU
does a batch in well under a millisecond).

Each image's parameters are drawn in the loader worker, from the image's own seed like every
other augmentation there, and travel with the batch as a (B, 4) tensor: rotation in degrees,
brightness, contrast and saturation factors. So an epoch's augmentations are the same for any
worker count and on resume.
"""

from __future__ import annotations

import functools
import math

import torch
from torch.nn import functional

IDENTITY = (0.0, 1.0, 1.0, 1.0)  # no rotation, every colour factor 1
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 weights of R, G, B, as torchvision's grayscale


def draw_device_params(rotate_degrees: float, color_jitter: float) -> torch.Tensor:
    """One image's (angle, brightness, contrast, saturation), from torch's generator (seeded
    per image by the dataset)."""
    def uniform(low: float, high: float) -> float:
        return float(torch.empty(()).uniform_(low, high)) if high > low else low

    return torch.tensor([uniform(-rotate_degrees, rotate_degrees),
                         uniform(1 - color_jitter, 1 + color_jitter),
                         uniform(1 - color_jitter, 1 + color_jitter),
                         uniform(1 - color_jitter / 2, 1 + color_jitter / 2)])


@functools.cache  # one copy per device: a copy from the host every batch would wait for the GPU
def _luma(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(_LUMA, device=device, dtype=dtype).view(1, 3, 1, 1)


def _grayscale(images: torch.Tensor) -> torch.Tensor:
    return (images * _luma(images.device, images.dtype)).sum(dim=1, keepdim=True)  # (B, 1, H, W)


def rotate(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Each image (B, 3, H, W) turned by its angle about its centre (bilinear, black corners,
    counter-clockwise for positive angles, like torchvision's rotate)."""
    radians = degrees * (math.pi / 180)
    cos, sin = torch.cos(radians), torch.sin(radians)
    zero = torch.zeros_like(cos)
    # affine_grid maps output to input coordinates (x right, y down): the inverse rotation.
    theta = torch.stack([torch.stack([cos, -sin, zero], dim=1),
                         torch.stack([sin, cos, zero], dim=1)], dim=1)  # (B, 2, 3)
    grid = functional.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return functional.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
                                  align_corners=False)


def jitter(images: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor,
           saturation: torch.Tensor) -> torch.Tensor:
    """Brightness, then contrast (towards the image's mean grey), then saturation (towards its
    grey image), each factor per image, on images in [0, 1]."""
    def per_image(factor: torch.Tensor) -> torch.Tensor:
        return factor.to(images.dtype).view(-1, 1, 1, 1)

    images = (images * per_image(brightness)).clamp_(0, 1)
    mean = _grayscale(images).mean(dim=(1, 2, 3), keepdim=True)
    images = (per_image(contrast) * images + (1 - per_image(contrast)) * mean).clamp_(0, 1)
    grey = _grayscale(images)
    return (per_image(saturation) * images + (1 - per_image(saturation)) * grey).clamp_(0, 1)


def augment_on_device(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Rotation, then colour jitter, of images in [0, 1] (B, 3, H, W) by params (B, 4)."""
    params = params.to(images.device, non_blocking=True)
    angle, brightness, contrast, saturation = params.unbind(dim=1)
    # Always both (an angle of 0 and factors of 1 leave an image as it is, to rounding): asking
    # the device whether any image needs one would make the host wait for it.
    return jitter(rotate(images, angle), brightness, contrast, saturation)
