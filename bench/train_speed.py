"""Benchmark: training images/s through the whole input pipeline, against the same training step
on tensors already on the device; their ratio is the input pipeline's efficiency.

    python bench/train_speed.py                                   # demo data, ResNet18, 64 px
    python bench/train_speed.py --data /data/dr-cache/center_crop-512px --model resnet50 \
        --resolution 512 --precision bf16 --batch-size 128 --workers 12        # on a GPU
    python bench/train_speed.py ... --decode gpu    # nvJPEG on the device, workers read bytes

Both measurements run in this process, interleaved round by round (best round kept), with the
model, optimizer, precision and batch size of a real run. Also printed: peak memory, the model's
FLOPs per training image, and on a GPU the FLOP utilisation that the images/s imply.
"""

from __future__ import annotations

import argparse
import itertools
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from omegaconf import OmegaConf  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from retino.config.schema import PRECISIONS  # noqa: E402
from retino.data.load.loaders import (  # noqa: E402
    DEFAULT_DEMO_CACHE,
    DatasetLocation,
    build_loaders,
    fit_shared_memory,
    read_index_at,
    resolve_num_workers,
)
from retino.data.prepare.demo import ensure_demo_dataset  # noqa: E402
from retino.models import build_network  # noqa: E402
from retino.training.devices import resolve_device  # noqa: E402
from retino.training.loop import seed_epoch, seed_everything, train_one_epoch  # noqa: E402
from retino.training.precision import GradientStep, resolve_step_settings  # noqa: E402

# Dense bf16/fp16 tensor-core peaks (TFLOP/s) of common training GPUs, for the utilisation line.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0,
               "V100": 125.0, "RTX 4090": 165.0}
AUGMENTATIONS = Path(__file__).resolve().parent.parent / "conf" / "augmentation"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="a prepared cache (default: the demo set)")
    parser.add_argument("--demo-train-size", type=int, default=1000)
    parser.add_argument("--demo-root", type=Path, default=DEFAULT_DEMO_CACHE)
    parser.add_argument("--model", default="resnet18", help="a model.name (efficientnet_b0, ...)")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", default="auto", help="DataLoader workers, or auto")
    parser.add_argument("--augmentation", default="flip", help="a name in conf/augmentation/ "
                        "(strong: rotation and colour jitter run on the device, in the loop)")
    parser.add_argument("--decode", default="cpu", choices=["cpu", "gpu"],
                        help="where JPEGs are decoded (data.decode): loader workers or device")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak, for utilisation")
    return parser.parse_args()


def dataset_location(args: argparse.Namespace) -> DatasetLocation:
    if args.data is not None:
        return DatasetLocation(args.data, args.data / "images")
    root = ensure_demo_dataset(args.demo_root, args.demo_train_size, 250, 128, 2024)
    return DatasetLocation(root, root / "images")


def endless(loader):
    """Batches across epoch boundaries, as training sees them (workers stay up)."""
    epoch = 1
    while True:
        seed_epoch(0, epoch, loader)
        yield from loader
        epoch += 1


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(train, batches, steps: int, device: torch.device) -> float:
    """Images per second over `steps` training steps, run by the real loop (train_one_epoch:
    its bookkeeping and its one read of the sums at the end included)."""
    seen = []

    def counted():
        for batch in itertools.islice(batches, steps):
            seen.append(len(batch[1]))  # (images, grades[, device augmentation params])
            yield batch

    synchronize(device)
    started = time.perf_counter()
    train(counted())
    synchronize(device)
    return sum(seen) / (time.perf_counter() - started)


def make_training(args: argparse.Namespace, device: torch.device):
    """The training loop of a real run over any batches, and its step settings."""
    model = build_network(args.model)
    settings = resolve_step_settings(args.precision, None, 0.0, device, args.compile)
    settings.prepare(model, device)
    runner = settings.compiled(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gradient_step = GradientStep(settings, device)
    criterion = torch.nn.CrossEntropyLoss()

    def train(batches) -> None:
        train_one_epoch(runner, batches, criterion, optimizer, device, 0, settings,
                        gradient_step)

    return train, settings


def flops_per_image(args: argparse.Namespace, device: torch.device, settings) -> float:
    """Forward and backward FLOPs of one image (counted on a separate copy of the model)."""
    model = build_network(args.model).to(device)
    images = torch.randn(2, 3, args.resolution, args.resolution, device=device)
    with FlopCounterMode(display=False) as counter, settings.autocast(device):
        model(images).float().sum().backward()
    return counter.get_total_flops() / 2


def peak_memory(device: torch.device) -> str:
    main = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    text = f"peak memory: {main:.2f} GiB resident (this process)"
    if device.type == "cuda":
        text += f", {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB on the GPU"
    return text


def utilisation(images_per_s: float, flops: float, device: torch.device,
                peak_tflops: float | None) -> str:
    achieved = images_per_s * flops / 1e12
    text = f"model: {flops / 1e9:.2f} GFLOP per training image -> {achieved:.2f} TFLOP/s"
    if device.type == "cuda" and peak_tflops is None:
        name = torch.cuda.get_device_name(device)
        peak_tflops = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    if peak_tflops:
        text += f", model FLOP utilisation {100 * achieved / peak_tflops:.1f}% of {peak_tflops:g}"
    return text


def main() -> None:
    args = parse_args()
    seed_everything(0)  # as a run starts: cuDNN chooses its fastest convolutions (benchmark on)
    device = resolve_device(args.device)
    location = dataset_location(args)
    workers = resolve_num_workers(args.workers if args.workers == "auto" else int(args.workers),
                                  feeds_gpu=device.type == "cuda")
    # and, as a run does, no more batches in flight than the machine's /dev/shm holds
    workers, prefetch = fit_shared_memory(workers, 2, args.batch_size, args.resolution)
    index = read_index_at(location)
    augmentation = OmegaConf.load(AUGMENTATIONS / f"{args.augmentation}.yaml")
    loader, _ = build_loaders(index, augmentation, args.resolution, args.batch_size, workers,
                              seed=0, decode=args.decode, prefetch_factor=prefetch)
    train, settings = make_training(args, device)
    pipeline = endless(loader)
    # One real batch, already on the device (uint8 images, decoded there with --decode gpu;
    # grades; device augmentation params):
    # the loop still scales, augments and normalises it there, as in training.
    in_memory = tuple(part.to(device) for part in next(pipeline))
    resident = iter(lambda: in_memory, None)
    timed_steps(train, pipeline, 3, device)  # warm-up: workers, cuDNN, compilation
    timed_steps(train, resident, 3, device)
    rates = {"pipeline": [], "memory": []}
    for _ in range(args.rounds):
        rates["pipeline"].append(timed_steps(train, pipeline, args.steps, device))
        rates["memory"].append(timed_steps(train, resident, args.steps, device))
    best = {k: max(v) for k, v in rates.items()}
    print(f"{args.model}, {args.resolution} px, {settings.precision}, batch {args.batch_size}, "
          f"{device}, {workers} loader workers, decode {args.decode}, augmentation "
          f"{args.augmentation}, cudnn.benchmark {torch.backends.cudnn.benchmark}, "
          f"{len(index['train'])} images in {location.root}, "
          f"best of {args.rounds} x {args.steps} steps")
    print(f"full pipeline (DataLoader over the JPEGs): {best['pipeline']:9.1f} images/s")
    print(f"same step on tensors already on {device.type}: {best['memory']:9.1f} images/s")
    print(f"input-pipeline efficiency (pipeline / in memory): "
          f"{best['pipeline'] / best['memory']:.2f}")
    print(peak_memory(device))
    print(utilisation(best["pipeline"], flops_per_image(args, device, settings), device,
                      args.peak_tflops))


if __name__ == "__main__":
    main()
