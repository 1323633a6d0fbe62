"""Benchmark: training images/s that one DataLoader worker delivers, uint8 samples (today's path:
normalised later, on the device) against float32 samples normalised in the worker (the path
before), in the same run; their ratio per augmentation.

    python bench/loader_speed.py                                    # demo images, 512 px
    python bench/loader_speed.py --data /data/dr-cache/center_crop-512px --augmentations strong

Each path: one worker process, batches collated through shared memory into the main process, as
training gets them. Today's path leaves rotation, colour jitter and normalisation to the training
device (retino/data/load/device_augment.py: a few passes over the whole batch; `bench/train_speed.py
--augmentation strong` times them in the real loop), so they are not a worker's work and not
timed here; the path before did all of it in the worker. Best of --rounds passes over the same
images (the first pass, which reads the files into the page cache, is not timed).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from omegaconf import OmegaConf  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

from retino import PROJECT_ROOT  # noqa: E402
from retino.data.load.dataset import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    RetinopathyDataset,
    build_transform,
    collate_images,
    read_rgb,
)
from retino.data.load.loaders import (  # noqa: E402
    DatasetLocation,
    read_index_at,
    training_set,
    worker_start_method,
)
from retino.data.prepare.demo import ensure_demo_dataset  # noqa: E402

AUGMENTATIONS = PROJECT_ROOT / "conf" / "augmentation"


class FloatSamples(RetinopathyDataset):
    """The path before: augment the decoded image's permuted view, then scale and normalise to
    float32 in the worker (3 MiB per 512 px image through shared memory), collated by PyTorch's
    default. It decodes with today's read_rgb, so the ratio, if anything, understates."""

    def __init__(self, index, transform) -> None:
        super().__init__(index, transform)
        self.to_float = v2.Compose([v2.ToDtype(torch.float32, scale=True),
                                    v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def __getitem__(self, item):
        i, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            view = torch.from_numpy(read_rgb(self.index.paths[i])).permute(2, 0, 1)
            return self.to_float(self.transform(view)), self.index.grades[i]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="a prepared cache (default: demo images)")
    parser.add_argument("--demo-root", type=Path, default=Path("data/bench-loader"))
    parser.add_argument("--images", type=int, default=192, help="images per timed pass")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--augmentations", nargs="+", default=["flip", "strong"],
                        help="names in conf/augmentation/")
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args()


def images_per_second(dataset, count: int, batch_size: int, rounds: int,
                      collate_fn=None) -> float:
    """Best of `rounds` timed passes of one worker over the first `count` images."""
    order = [(i % len(dataset), i) for i in range(count)]
    loader = DataLoader(dataset, batch_size=batch_size, sampler=order, num_workers=1,
                        persistent_workers=True, multiprocessing_context=worker_start_method(),
                        collate_fn=collate_fn)
    best = 0.0
    for round_ in range(rounds + 1):
        started = time.perf_counter()
        for _ in loader:
            pass
        if round_ > 0:  # the first pass starts the worker and warms the page cache
            best = max(best, count / (time.perf_counter() - started))
    return best


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)  # the main process only collects batches, like a worker's share
    root = args.data or ensure_demo_dataset(args.demo_root, args.images, 5, args.resolution, 7)
    index = read_index_at(DatasetLocation(root, root / "images"))["train"]
    print(f"{len(index)} images in {root}, {args.resolution} px, batch {args.batch_size}, "
          f"one worker, best of {args.rounds} passes of {args.images} images")
    for name in args.augmentations:
        aug = OmegaConf.load(AUGMENTATIONS / f"{name}.yaml")
        transform = build_transform(args.resolution, train=True,
                                    **{k: v for k, v in aug.items() if k != "name"})
        before = images_per_second(FloatSamples(index, transform), args.images,
                                   args.batch_size, args.rounds)
        after = images_per_second(training_set(index, aug, args.resolution), args.images,
                                  args.batch_size, args.rounds, collate_images)
        print(f"{name:>8}: float32 in the worker {before:7.1f} images/s, uint8 {after:7.1f} "
              f"images/s per worker: {after / before:.2f}x")


if __name__ == "__main__":
    main()
