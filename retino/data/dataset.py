"""The lab's "RetinopathyLoader": a Dataset over the CSV index, and the train/test transforms."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from retino.data.layout import SplitIndex
from retino.errors import DataError

# ImageNet statistics (RGB): pretrained weights expect inputs normalised this way.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def read_rgb(path: Path) -> np.ndarray:
    """Decode a JPEG into an (H, W, 3) uint8 RGB array; a file that fails raises naming it."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"Cannot decode image {path}: the file is corrupt, truncated or not an "
                        "image. Replace it or remove it from the split's CSV files.")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)  # OpenCV decodes BGR; the models expect RGB


class RetinopathyLoader(Dataset):
    """Fundus images of one split, returned as (transformed tensor, grade)."""

    def __init__(self, index: SplitIndex, transform: Callable | None = None) -> None:
        self.index = index
        self.transform = transform

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        """Image i, or (i, seed) from an EpochSampler: its random augmentation then follows
        from the seed alone, whichever worker process draws it."""
        i, seed = item if isinstance(item, tuple) else (item, None)
        image = read_rgb(self.index.paths[i])  # (H, W, 3) uint8, RGB
        tensor = torch.from_numpy(image).permute(2, 0, 1)  # (3, H, W)
        if self.transform is not None:
            tensor = self._augment(tensor, seed)
        return tensor, self.index.grades[i]

    def _augment(self, tensor: torch.Tensor, seed: int | None) -> torch.Tensor:
        if seed is None:
            return self.transform(tensor)
        with torch.random.fork_rng(devices=[]):  # the process's own random state is kept
            torch.manual_seed(seed)
            return self.transform(tensor)


def build_transform(size: int, train: bool, hflip: float = 0.0, vflip: float = 0.0,
                    rotate_degrees: float = 0.0, color_jitter: float = 0.0,
                    crop_scale_min: float = 1.0) -> v2.Compose:
    """uint8 (3, H, W) -> normalised float (3, size, size); augmentations only when train."""
    steps: list[torch.nn.Module] = [v2.Resize((size, size), antialias=True)]
    if train:
        if crop_scale_min < 1.0:
            steps.append(v2.RandomResizedCrop(size, scale=(crop_scale_min, 1.0),
                                              ratio=(0.9, 1.1), antialias=True))
        if hflip > 0:
            steps.append(v2.RandomHorizontalFlip(hflip))
        if vflip > 0:
            steps.append(v2.RandomVerticalFlip(vflip))
        if rotate_degrees > 0:
            steps.append(v2.RandomRotation(rotate_degrees))
        if color_jitter > 0:
            steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter,
                                        saturation=color_jitter / 2))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return v2.Compose(steps)
