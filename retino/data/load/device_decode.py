"""JPEG decoding on the training device (data.decode=gpu), for hosts whose cores cannot keep up.

The loader workers only read each file's bytes and draw its geometry (random resized crop, flips)
from the image's own seed, in the order the CPU path draws them; the training process decodes a
whole batch at once (nvJPEG on CUDA, through torchvision.io.decode_jpeg) and resizes, crops and
flips each image there. Rotation and colour jitter follow on the device as in the CPU path
(retino/data/load/device_augment.py). So the same seed gives the same geometry on either path, and
the pixels differ only by the decoder's and the resize's rounding.

torchvision 0.29 marks its image decoders deprecated in favour of TorchCodec; they still work,
and its warning is silenced here so that a training log is not flooded with it.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional

from retino.core.errors import DataError
from retino.data.layout import SplitIndex
from retino.data.load.device_augment import draw_device_params

log = logging.getLogger(__name__)
CROP_RATIO = (0.9, 1.1)  # the aspect ratios a random resized crop may take, both paths


def draw_geometry(size: int, hflip: float = 0.0, vflip: float = 0.0,
                  crop_scale_min: float = 1.0) -> torch.Tensor:
    """One image's (top, left, height, width, hflip, vflip): the crop box in the size x size
    resized image and whether to flip it, drawn from torch's generator with the same calls, in
    the same order, as build_transform's crop and flips make."""
    top, left, height, width = 0, 0, size, size
    if crop_scale_min < 1.0:
        crop = v2.RandomResizedCrop(size, scale=(crop_scale_min, 1.0), ratio=CROP_RATIO)
        box = crop.make_params([torch.empty(3, size, size)])
        top, left, height, width = box["top"], box["left"], box["height"], box["width"]
    flip_h = hflip > 0 and bool(torch.rand(1) < hflip)
    flip_v = vflip > 0 and bool(torch.rand(1) < vflip)
    return torch.tensor([top, left, height, width, flip_h, flip_v], dtype=torch.int64)


class JpegBatch:
    """A batch of undecoded JPEG files and their geometry, as the loader workers hand it over.

    .to(device) decodes it there into uint8 (B, 3, size, size), the batch the CPU path would
    have delivered: the training loop and ahead_on_device treat it as a tensor of images."""

    def __init__(self, data: Sequence[torch.Tensor], geometry: torch.Tensor, size: int,
                 names: Sequence[str]) -> None:
        self.data, self.geometry, self.size, self.names = list(data), geometry, size, list(names)

    def __len__(self) -> int:
        return len(self.data)

    def pin_memory(self) -> JpegBatch:
        return self  # the decoder reads the bytes on the host: nothing to pin

    def to(self, device: torch.device | str, non_blocking: bool = False) -> torch.Tensor:
        device = torch.device(device)
        images = [_place(image, box.tolist(), self.size)
                  for image, box in zip(self._decoded(device), self.geometry, strict=True)]
        return torch.stack(images)

    def _decoded(self, device: torch.device) -> list[torch.Tensor]:
        if device.type == "cuda":
            # nvJPEG writes on a stream of its own into outputs allocated on the current one,
            # without waiting for it (pytorch/vision#9606): the allocator may hand it memory that
            # queued kernels still read. Wait for them; in ahead_on_device the current stream
            # is the copy stream, so this waits for the last copies, not for a training step.
            torch.cuda.current_stream(device).synchronize()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                return decode_jpeg(self.data, mode=ImageReadMode.RGB, device=device)
            except RuntimeError:
                for data, name in zip(self.data, self.names, strict=True):  # which one?
                    _decode_one(data, name)
                raise


def _decode_one(data: torch.Tensor, name: str) -> torch.Tensor:
    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB)
    except RuntimeError as err:
        raise DataError(f"Cannot decode image {name} as a JPEG ({err}). data.decode=gpu reads "
                        "JPEG files only: prepare the images with `python -m retino.data.prepare` "
                        "(it writes JPEGs), replace the file, or use data.decode=cpu.") from err


def _place(image: torch.Tensor, box: list[int], size: int) -> torch.Tensor:
    """A decoded (3, H, W) image resized to size x size, cropped to its box (resized back to
    size) and flipped, as build_transform does in a loader worker."""
    image = functional.resize(image, [size, size], antialias=True)
    top, left, height, width, flip_h, flip_v = box
    if (top, left, height, width) != (0, 0, size, size):
        image = functional.resized_crop(image, top, left, height, width, [size, size],
                                        antialias=True)
    if flip_h:
        image = image.flip(-1)
    if flip_v:
        image = image.flip(-2)
    return image


class EncodedImages(Dataset):
    """The images of one split as file bytes, with each one's geometry (and device
    augmentation parameters when given): what a loader worker does for data.decode=gpu."""

    def __init__(self, index: SplitIndex, size: int, geometry: dict[str, float] | None = None,
                 device_augmentation: tuple[float, float] | None = None) -> None:
        self.index, self.size = index, size
        self.geometry = geometry or {}
        self.device_augmentation = device_augmentation

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple:
        """Image i, or (i, seed) from an EpochSampler: (bytes, name, geometry, grade[, device
        parameters]), the random ones drawn from the seed alone, as RetinopathyDataset does."""
        i, seed = item if isinstance(item, tuple) else (item, None)
        if seed is None:
            return self._item(i)
        with torch.random.fork_rng(devices=[]):  # the process's own random state is kept
            torch.manual_seed(seed)
            return self._item(i)

    def _item(self, i: int) -> tuple:
        path: Path = self.index.paths[i]
        box = draw_geometry(self.size, **self.geometry)
        extra = (() if self.device_augmentation is None
                 else (draw_device_params(*self.device_augmentation),))
        data = torch.from_numpy(np.fromfile(path, dtype=np.uint8))  # the file's bytes
        return (data, str(path), box, self.index.grades[i], *extra)

    def collate(self, batch: list[tuple]) -> list:
        """[JpegBatch, grades (B,), and device augmentation parameters (B, 4) if any]."""
        data, names, boxes, grades, *extra = zip(*batch, strict=True)
        images = JpegBatch(data, torch.stack(boxes), self.size, names)
        return [images, torch.tensor(grades), *(torch.stack(part) for part in extra)]


def warn_unless_gpu(decode: str, device: torch.device) -> None:
    """data.decode=gpu off a GPU still works (decoded in the training process, a batch at a
    time), but it is then slower than the loader workers: say so."""
    if decode == "gpu" and device.type != "cuda":
        log.warning("data.decode=gpu on the %s: the JPEGs are decoded in the training process, "
                    "not on a GPU, and loading is slower than with data.decode=cpu.", device.type)
