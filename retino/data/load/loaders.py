"""Finding the dataset on disk, reading its index, and the train and test DataLoaders."""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import shutil
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Sampler

from retino import PROJECT_ROOT
from retino.core.errors import DataError
from retino.core.grades import NUM_GRADES
from retino.data.layout import SplitIndex, read_manifest, read_split_index
from retino.data.load.dataset import RetinopathyDataset, build_transform
from retino.data.load.device_decode import EncodedImages, warn_unless_gpu
from retino.data.prepare.demo import ensure_demo_dataset

log = logging.getLogger(__name__)

DEFAULT_DEMO_CACHE = PROJECT_ROOT / "data"
SHARED_MEMORY = Path("/dev/shm")  # where loader workers put the batches they hand over
SHARED_MEMORY_BUDGET = 0.5  # of its free space; the rest for other processes


@dataclass(frozen=True)
class DatasetLocation:
    root: Path  # folder of the four CSVs
    image_dir: Path  # folder of <name>.jpeg


def locate_dataset(data: DictConfig) -> DatasetLocation:
    """Where the CSVs and images are; the demo set is generated here on first use."""
    if data.name == "demo":
        cache = Path(data.root).expanduser() if data.root else DEFAULT_DEMO_CACHE
        root = ensure_demo_dataset(cache, data.train_size, data.test_size, data.image_size,
                                   data.seed)
    else:
        root = Path(data.root).expanduser().resolve()
        if not root.is_dir():
            raise DataError(f"data.root={data.root} is not a folder. Point it at the folder that "
                            "holds train_img.csv, train_label.csv, test_img.csv, test_label.csv.")
    image_dir = Path(data.image_dir).expanduser()
    return DatasetLocation(root, image_dir if image_dir.is_absolute() else root / image_dir)


def read_index(data: DictConfig) -> dict[str, SplitIndex]:
    """Validated train and test indexes (missing files, bad labels, empty splits are errors)."""
    return read_index_at(locate_dataset(data))


def read_index_at(location: DatasetLocation) -> dict[str, SplitIndex]:
    return {split: read_split_index(location.root, location.image_dir, split)
            for split in ("train", "test")}


def cache_params(root: Path) -> dict[str, object]:
    """What a prepared cache was made from (its manifest.json), as params to log; {} if none.

    A cache that skipped images says so in the log too: its CSVs list only the good ones."""
    manifest = read_manifest(root)
    if not manifest:
        return {}
    counts = manifest.get("counts", {})
    if counts.get("skipped"):
        log.warning("The prepared cache %s skipped %d images (unreadable or invalid); see "
                    "report.csv there.", root, counts["skipped"])
    return {"cache.method": manifest.get("method"), "cache.size": manifest.get("size"),
            "cache.method_version": manifest.get("method_version", 1),
            "cache.source": manifest.get("source"), "cache.split": manifest.get("split"),
            "cache.skipped": counts.get("skipped", 0),
            "cache.converted": counts.get("converted", 0),
            # photographs judged not gradable (kept and marked, or dropped: cache.quality)
            "cache.quality": manifest.get("quality", {}).get("mode", "not assessed"),
            "cache.not_gradable": manifest.get("quality", {}).get("not_gradable", 0)}


def grade_histogram(grades: list[int]) -> np.ndarray:
    return np.bincount(np.asarray(grades, dtype=int), minlength=NUM_GRADES)


def balanced_weights(grades: list[int]) -> torch.Tensor:
    """Per-image sampling weights that draw each grade equally often."""
    return torch.as_tensor(1.0 / grade_histogram(grades)[np.asarray(grades)])


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch e of a run seeded `seed`: its order, augmentations and every random
    draw of its training step follow from it alone (EpochSampler and train.seed_epoch)."""
    return seed * 100_003 + epoch


class EpochSampler(Sampler):
    """The training order of an epoch, and an augmentation seed for each image drawn.

    Both follow from (seed, epoch) alone, set by set_epoch() in the main process. So an epoch
    is the same whether the DataLoader has 0 or 12 workers, persistent or started anew, and a run
    resumed from its checkpoint continues exactly as an uninterrupted one would. With weights,
    images are drawn with replacement in proportion to them (the class-balanced sampler)."""

    def __init__(self, size: int, seed: int, weights: torch.Tensor | None = None) -> None:
        self.size, self.seed, self.weights, self.epoch = size, seed, weights, 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        if self.weights is None:
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.multinomial(self.weights, self.size, replacement=True,
                                      generator=generator)
        seeds = torch.randint(0, 2**62, (self.size,), generator=generator)
        return iter(zip(order.tolist(), seeds.tolist(), strict=True))


def resolve_num_workers(setting: int | str, feeds_gpu: bool) -> int:
    """'auto': feeding a GPU, one DataLoader process per core this job may use, less one for
    the training process; training on the CPU, none: the training step already uses every core,
    and loader processes only compete with it (measured by bench/train_speed.py on 2 cores:
    0.94 of the in-memory speed with no worker, 0.83 with one, 0.89 with two).

    The cores are the process's CPU affinity (what SLURM or taskset grant), or fewer when a
    launcher sharing the machine set OMP_NUM_THREADS (joblib does: cores / jobs)."""
    if setting != "auto":
        return int(setting)
    if not feeds_gpu:
        return 0
    cores = len(os.sched_getaffinity(0))
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) < cores:
        # Said, not silent: an image that sets OMP_NUM_THREADS=1 for every process would
        # otherwise leave a GPU fed by the training process alone.
        log.info("data.num_workers=auto: OMP_NUM_THREADS=%s limits this job to %s of the %d "
                 "cores it may use, so %d loader worker(s); set data.num_workers to choose.",
                 omp, omp, cores, max(0, int(omp) - 1))
        cores = int(omp)
    return max(0, cores - 1)


def fit_shared_memory(num_workers: int, prefetch_factor: int, batch_size: int,
                      size: int, jobs_at_once: int = 1) -> tuple[int, int]:
    """(workers, prefetch_factor) whose batches in flight fit in this job's share (of
    jobs_at_once running together) of half the free shared memory: a container's default 64 MiB
    /dev/shm otherwise ends the run with a bus error mid-epoch. Fewer batches in flight first,
    then fewer workers; said in the log with the fix."""
    if num_workers == 0 or not SHARED_MEMORY.is_dir():
        return num_workers, prefetch_factor
    batch_bytes = batch_size * 3 * size * size  # uint8 samples
    # The training loader's workers keep theirs while an evaluation loader's workers fill theirs.
    free = shutil.disk_usage(SHARED_MEMORY).free
    batches = (SHARED_MEMORY_BUDGET * free / jobs_at_once) // (2 * batch_bytes)
    if num_workers * prefetch_factor <= batches:
        return num_workers, prefetch_factor
    # Not one batch per worker: load in the training process, which needs no shared memory.
    workers, prefetch = (min(num_workers, int(batches)), 1) if batches >= 1 else (0, 2)
    log.warning("Shared memory (%s, %.0f MiB free, for %d job(s) at once) holds %d batches of "
                "%d images at %d px, not the %d that data.num_workers=%d x "
                "data.prefetch_factor=%d need: using %d worker(s), prefetching 1 batch each "
                "(0: loading in the training process). Give the container more (docker run "
                "--shm-size=8g) to load faster.", SHARED_MEMORY, free / 2**20, jobs_at_once,
                batches, batch_size, size, num_workers * prefetch_factor, num_workers,
                prefetch_factor, workers)
    return workers, prefetch


def _init_worker(worker_id: int) -> None:
    """DataLoader workers: derive NumPy/random seeds from torch's per-worker seed, and leave
    SIGUSR2 to the training process. Workers are forked with its handlers, and under submitit
    that signal means "checkpoint and requeue this job": only the job itself may do that."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def worker_start_method() -> multiprocessing.context.BaseContext:
    """How loader workers start, chosen here rather than inherited: inside a joblib (loky)
    worker, which Hydra's `parallel` launcher runs jobs in, the inherited default makes
    processes that cannot start ("'Process' object has no attribute 'env'"). fork where the
    platform has it (Linux: what PyTorch uses by default, and fast); spawn elsewhere."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if sys.platform == "linux" and "fork" in methods
                                       else "spawn")


def _loader_options(dataset: Dataset, batch_size: int, num_workers: int, seed: int,
                    prefetch_factor: int) -> dict:
    options = dict(dataset=dataset, batch_size=batch_size, num_workers=num_workers,
                   worker_init_fn=_init_worker, collate_fn=dataset.collate,
                   pin_memory=torch.cuda.is_available(),  # for non-blocking copies to the GPU
                   generator=torch.Generator().manual_seed(seed))
    if num_workers == 0:
        return options
    return options | dict(prefetch_factor=prefetch_factor,
                          multiprocessing_context=worker_start_method())


def evaluation_set(split: SplitIndex, size: int, decode: str = "cpu") -> Dataset:
    """A split's images, plain: decoded in the loader worker, or (decode=gpu) read there and
    decoded on the device (retino/data/load/device_decode.py)."""
    if decode == "gpu":
        return EncodedImages(split, size)
    return RetinopathyDataset(split, build_transform(size, train=False))


def evaluation_loader(split: SplitIndex, size: int, batch_size: int, num_workers: int,
                      prefetch_factor: int = 2, decode: str = "cpu") -> DataLoader:
    """A plain, in-order loader of a split (validation or test). Its workers start anew for each
    evaluation: kept alive too, they would double the processes (and memory) for a pass that
    runs once an epoch."""
    return DataLoader(shuffle=False, **_loader_options(evaluation_set(split, size, decode),
                                                       batch_size, num_workers, 0,
                                                       prefetch_factor))


def training_set(split: SplitIndex, augmentation: DictConfig, size: int,
                 decode: str = "cpu") -> Dataset:
    """The augmented training images: resize, crop and flips in the loader worker (decode=gpu:
    their parameters drawn there, applied on the device); rotation and colour jitter, the
    costly ones, on the training device (retino/data/load/device_augment.py)."""
    aug = {k: v for k, v in augmentation.items() if k != "name"}
    rotate, jitter = aug.pop("rotate_degrees", 0.0), aug.pop("color_jitter", 0.0)
    on_device = (rotate, jitter) if rotate > 0 or jitter > 0 else None
    if decode == "gpu":
        return EncodedImages(split, size, aug, on_device)
    return RetinopathyDataset(split, build_transform(size, train=True, **aug), on_device)


def build_loaders(index: dict[str, SplitIndex], augmentation: DictConfig, size: int,
                  batch_size: int, num_workers: int, seed: int, balanced: bool = False,
                  persistent_workers: bool = True, prefetch_factor: int = 2,
                  decode: str = "cpu") -> tuple[DataLoader, DataLoader]:
    """Train loader (augmented, shuffled or class-balanced) and test loader (plain, in order)."""
    train_set = training_set(index["train"], augmentation, size, decode)
    weights = balanced_weights(index["train"].grades) if balanced else None
    train = DataLoader(sampler=EpochSampler(len(train_set), seed, weights),
                       drop_last=len(train_set) > batch_size,
                       persistent_workers=persistent_workers and num_workers > 0,
                       **_loader_options(train_set, batch_size, num_workers, seed,
                                         prefetch_factor))
    return train, evaluation_loader(index["test"], size, batch_size, num_workers,
                                    prefetch_factor, decode)


def data_loaders(cfg: DictConfig, index: dict, device: torch.device, jobs_at_once: int = 1,
                 ) -> tuple[DataLoader, DataLoader, DataLoader | None]:
    """Train, test and (with a validation split) validation loaders."""
    warn_unless_gpu(cfg.data.decode, device)
    workers, prefetch = fit_shared_memory(  # for all three loaders together
        resolve_num_workers(cfg.data.num_workers, feeds_gpu=device.type == "cuda"),
        cfg.data.prefetch_factor, cfg.batch_size, cfg.resolution.size, jobs_at_once)
    log.info("Data: %d train / %d validation / %d test images; train grades %s; %d loader "
             "workers (%d job(s) at once on this machine)", len(index["train"]),
             len(index.get("val", ())), len(index["test"]),
             grade_histogram(index["train"].grades).tolist(), workers, jobs_at_once)
    train, test = build_loaders(index, cfg.augmentation, cfg.resolution.size, cfg.batch_size,
                                workers, cfg.seed, balanced=cfg.imbalance == "balanced_sampler",
                                persistent_workers=cfg.data.persistent_workers,
                                prefetch_factor=prefetch, decode=cfg.data.decode)
    return train, test, (evaluation_loader(index["val"], cfg.resolution.size, cfg.batch_size,
                                           workers, prefetch, cfg.data.decode)
                         if "val" in index else None)
