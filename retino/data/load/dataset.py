"""The Dataset over the CSV index (`RetinopathyDataset`, the lab's "RetinopathyLoader"), and the
train/test transforms.

Samples leave the loader workers as uint8 images in the decoder's own pixel-interleaved layout
(decode, resize, crop, flip and rotate happen there) and are scaled and normalised on the
training device by normalize_images: a quarter of float32's bytes through shared memory and the
copy to the GPU, no float work per image in the workers, and batches that arrive in the
channels-last layout the GPU step uses (bench/loader_speed.py measures the difference).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate
from torchvision.transforms import v2

from retino.core.errors import DataError
from retino.data.layout import SplitIndex
from retino.data.load.device_augment import augment_on_device, draw_device_params
from retino.data.load.device_decode import CROP_RATIO
from retino.data.prepare.preprocess import MAX_MEGAPIXELS, BadImage, decode_rgb, inspect_image

# ImageNet statistics (RGB): pretrained weights expect inputs normalised this way.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def read_rgb(path: Path) -> np.ndarray:
    """Decode a JPEG into an (H, W, 3) uint8 RGB array; a file that fails raises naming it."""
    image = decode_rgb(np.fromfile(path, np.uint8))
    if image is None:
        raise DataError(f"Cannot decode image {path}: the file is corrupt, truncated or not an "
                        "image. Replace it or remove it from the split's CSV files.")
    return image


def photograph_problems(paths: Sequence[Path],
                        max_megapixels: float = MAX_MEGAPIXELS) -> list[tuple[Path, str]]:
    """(path, reason) of each photograph that cannot be trained on, from its header alone
    (nothing decoded): empty, not an image, a truncated JPEG, too small, or above the pixel
    limit."""
    problems = []
    for path in paths:
        try:
            inspect_image(Path(path), max_megapixels)
        except BadImage as err:
            problems.append((Path(path), str(err)))
    return problems


SHOWN_PROBLEMS = 10  # bad photographs named in one message; the rest counted


def refuse_photographs(problems: Sequence[tuple[Path, str]]) -> None:
    """DataError before the first epoch naming every photograph of a folder that cannot be
    trained on (what training met mid-epoch was OpenCV's raw assertion); none: nothing."""
    if problems:
        raise DataError(f"{len(problems)} photograph(s) cannot be trained on:"
                        f"{listed_problems(problems)}\nRemove them from the split's CSV files, "
                        "train without them (bad_photographs=skip), or prepare the folder with "
                        "python -m retino.data.prepare, which skips them and reports each.")


def listed_problems(problems: Sequence[tuple[Path, str]]) -> str:
    """The first SHOWN_PROBLEMS as indented lines with their reasons, the rest counted."""
    shown = "".join(f"\n  - {path}: {reason}" for path, reason in problems[:SHOWN_PROBLEMS])
    more = len(problems) - SHOWN_PROBLEMS
    return shown + (f"\n  ... and {more} more" if more > 0 else "")


def index_problems(index: dict[str, SplitIndex],
                   max_megapixels: float) -> list[tuple[Path, str]]:
    """(path, reason) of every photograph of every split that cannot be trained on."""
    return [problem for split in index.values()
            for problem in photograph_problems(split.paths, max_megapixels)]


def without_photographs(index: dict[str, SplitIndex],
                        left_out: Sequence[Path]) -> dict[str, SplitIndex]:
    """The index with the photographs left_out removed from every split (their grades,
    patients and quality verdicts with them)."""
    gone = {Path(path) for path in left_out}
    return {name: _kept(split, [k for k, path in enumerate(split.paths) if path not in gone])
            for name, split in index.items()}


def _kept(split: SplitIndex, rows: list[int]) -> SplitIndex:
    verdicts = split.not_gradable
    return SplitIndex(split.split, [split.paths[k] for k in rows], [split.grades[k] for k in rows],
                      [split.patients[k] for k in rows],
                      None if verdicts is None else [verdicts[k] for k in rows])


class RetinopathyDataset(Dataset):
    """Fundus images of one split, returned as (transformed tensor, grade), and with
    device_augmentation (rotate_degrees, color_jitter) the image's parameters for
    retino.data.load.device_augment as a third element."""

    def __init__(self, index: SplitIndex, transform: Callable | None = None,
                 device_augmentation: tuple[float, float] | None = None) -> None:
        self.index = index
        self.transform = transform
        self.device_augmentation = device_augmentation

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple:
        """Image i, or (i, seed) from an EpochSampler: its random augmentation then follows
        from the seed alone, whichever worker process draws it."""
        i, seed = item if isinstance(item, tuple) else (item, None)
        image = read_rgb(self.index.paths[i])  # (H, W, 3) uint8, RGB
        # (3, H, W) as a view of the decoded pixels (channels last in memory): the transforms
        # keep that layout, and collate_images stacks it without a copy per image.
        tensor = torch.from_numpy(image).permute(2, 0, 1)
        if seed is None:
            return self._augment(tensor, self.index.grades[i])
        with torch.random.fork_rng(devices=[]):  # the process's own random state is kept
            torch.manual_seed(seed)
            return self._augment(tensor, self.index.grades[i])

    def collate(self, batch: list[tuple]) -> list[torch.Tensor]:
        return collate_images(batch)

    def _augment(self, tensor: torch.Tensor, grade: int) -> tuple:
        if self.transform is not None:
            tensor = self.transform(tensor)
        if self.device_augmentation is None:
            return tensor, grade
        return tensor, grade, draw_device_params(*self.device_augmentation)


def build_transform(size: int, train: bool, hflip: float = 0.0, vflip: float = 0.0,
                    rotate_degrees: float = 0.0, color_jitter: float = 0.0,
                    crop_scale_min: float = 1.0) -> v2.Compose:
    """uint8 (3, H, W) -> uint8 (3, size, size); augmentations only when train. The model's
    input is normalize_images of a batch of these, on its device."""
    steps: list[torch.nn.Module] = [v2.Resize((size, size), antialias=True)]
    if train:
        if crop_scale_min < 1.0:
            steps.append(v2.RandomResizedCrop(size, scale=(crop_scale_min, 1.0),
                                              ratio=CROP_RATIO, antialias=True))
        if hflip > 0:
            steps.append(v2.RandomHorizontalFlip(hflip))
        if vflip > 0:
            steps.append(v2.RandomVerticalFlip(vflip))
        if rotate_degrees > 0:
            steps.append(v2.RandomRotation(rotate_degrees))
        if color_jitter > 0:
            steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter,
                                        saturation=color_jitter / 2))
    return v2.Compose(steps)


def collate_images(batch: list[tuple]) -> list[torch.Tensor]:
    """[images (B, 3, H, W) uint8, channels last in memory; grades (B,); and device
    augmentation parameters (B, 4) when the samples carry them]: stacked in the layout the
    samples have (in shared memory when called in a loader worker)."""
    pixels, *rest = default_collate([(image.permute(1, 2, 0), *more) for image, *more in batch])
    return [pixels.permute(0, 3, 1, 2), *rest]  # (B, H, W, 3) -> (B, 3, H, W)


@functools.cache  # one copy per device: a copy from the host every batch would wait for the GPU
def _statistics(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1),
            torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1))


def normalize_images(images: torch.Tensor, device_params: torch.Tensor | None = None,
                     statistics: tuple[torch.Tensor, torch.Tensor] | None = None,
                     ) -> torch.Tensor:
    """A uint8 batch (B, 3, H, W) -> float32 scaled to [0, 1], augmented by device_params
    (rotation, colour jitter) when given, and normalised with the ImageNet statistics, on the
    batch's device. statistics: (mean, std) (1, 3, 1, 1) to use instead of the cached ones (an
    exporter tracing the cached ones would trace them into its graph and break the cache)."""
    mean, std = statistics if statistics is not None else _statistics(images.device)
    scaled = images.float().div_(255)
    if device_params is not None:
        scaled = augment_on_device(scaled, device_params)
    return scaled.sub_(mean).div_(std)
