"""Initialisation from CIFAR-10: train the same ResNet on CIFAR-10 once, cache it, reuse it.

CIFAR-10 comes in torchvision's on-disk format, `<root>/cifar-10-batches-py/` with pickled
`data_batch_1..5`, `test_batch` and `batches.meta`. When it is missing it is downloaded with
`torchvision.datasets.CIFAR10` (which checks the archive's MD5). Reading is done here, checking
shapes and labels rather than each file's MD5, so that any folder in the real format (a copy on a
cluster, the tests' tiny one) is read by the same code.

The checkpoint is cached by everything that determines it (architecture, epochs, seed, recipe),
so a second run or study that asks for the same one trains nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from retino import PROJECT_ROOT
from retino.core.errors import DataError
from retino.core.files import atomic_write_text
from retino.core.locks import exclusive
from retino.core.metric_names import TRAIN_ACC
from retino.core.names import CIFAR10_RUN_TAG
from retino.core.pickles import load_data_pickle
from retino.data.load.dataset import normalize_images
from retino.models import build_model
from retino.training.checkpoint import atomic_torch_save, cpu_state_dict
from retino.training.loop import (
    infer,
    preserved_randomness,
    seed_epoch,
    seed_everything,
    train_one_epoch,
)
from retino.training.precision import GradientStep, StepSettings

log = logging.getLogger(__name__)

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
RECIPE_VERSION = 1  # bump when the pretraining recipe changes: old checkpoints are not reused
RunFactory = Callable[[str, dict[str, Any]], AbstractContextManager]


def _load_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 3, 32, 32) uint8, labels (N,) int64) of one pickled CIFAR-10 batch."""
    batch = load_data_pickle(path, encoding="bytes")  # a Python 2 pickle, read as plain data
    if not isinstance(batch, dict):
        raise DataError(f"{path} is not a CIFAR-10 batch (a dict of data and labels).")
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if data is None or labels is None:
        raise DataError(f"{path} is not a CIFAR-10 batch (no data/labels entries).")
    data, labels = np.asarray(data), np.asarray(labels, dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.dtype != np.uint8:
        raise DataError(f"{path}: data has shape {data.shape} {data.dtype}, expected (N, 3072) "
                        "uint8.")
    if len(labels) != len(data) or labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{path}: {len(labels)} labels for {len(data)} images, or labels "
                        "outside 0-9.")
    return data.reshape(-1, 3, 32, 32), labels


def ensure_cifar10(root: Path, download: bool) -> Path:
    """The folder of the pickled batches, downloaded first when missing and allowed."""
    folder = Path(root) / FOLDER
    names = (*TRAIN_BATCHES, "test_batch", "batches.meta")
    if all((folder / name).is_file() for name in names):
        return folder
    if not download:
        raise DataError(f"CIFAR-10 not found in {folder}. Copy torchvision's extracted "
                        f"'{FOLDER}' folder into {root} (pretrain.root), or set "
                        "pretrain.download=true on a machine with internet.")
    import torchvision  # here: only a download needs it (a second of start-up otherwise)

    log.info("Downloading CIFAR-10 to %s", root)
    torchvision.datasets.CIFAR10(str(root), train=True, download=True)
    return folder


def read_cifar10(root: Path, download: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder = ensure_cifar10(root, download)
    parts = [_load_batch(folder / name) for name in TRAIN_BATCHES]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return {"train": train, "test": _load_batch(folder / "test_batch")}


def _loader(images: np.ndarray, labels: np.ndarray, batch_size: int, shuffle: bool,
            seed: int, device: torch.device) -> DataLoader:
    """Batches of the in-memory images (no worker processes: nothing to decode), pinned for
    non-blocking copies when they feed a GPU."""
    x = normalize_images(torch.from_numpy(images))  # (N, 3, 32, 32), as for DR
    return DataLoader(TensorDataset(x, torch.from_numpy(labels)), batch_size=batch_size,
                      shuffle=shuffle, generator=torch.Generator().manual_seed(seed),
                      pin_memory=device.type == "cuda")


@dataclass(frozen=True)
class PretrainDevice:
    """Where and how the DR run trains; its CIFAR-10 pretraining trains the same way."""

    device: torch.device = torch.device("cpu")
    settings: StepSettings = StepSettings()
    deterministic: bool = False


ON_CPU = PretrainDevice()  # fp32 on the CPU: what a call without a device gets


def _recipe(model_name: str, pretrain: Any, on: PretrainDevice) -> dict[str, Any]:
    """Everything that decides the pretrained weights, how they are computed included: a
    checkpoint made in bf16 on a GPU is not what a deterministic fp32 CPU run would make."""
    return {"model": model_name, "epochs": pretrain.epochs, "seed": pretrain.seed,
            "lr": pretrain.lr, "batch_size": pretrain.batch_size,
            "train_size": pretrain.train_size, "recipe": RECIPE_VERSION,
            "device": on.device.type, "precision": on.settings.precision,
            "channels_last": on.settings.channels_last, "deterministic": on.deterministic}


def checkpoint_path(model_name: str, pretrain: Any, on: PretrainDevice = ON_CPU) -> Path:
    """Where the checkpoint of this recipe lives; its name carries a digest of the recipe."""
    recipe = _recipe(model_name, pretrain, on)
    digest = hashlib.sha1(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:10]
    folder = Path(pretrain.cache_dir or PROJECT_ROOT / "data" / "pretrained")
    return folder / f"cifar10-{model_name}-e{pretrain.epochs}-s{pretrain.seed}-{digest}.pt"


def pretrain_on_cifar10(model_name: str, pretrain: Any, tracker: Any,
                        on: PretrainDevice = ON_CPU) -> tuple[dict[str, float], torch.nn.Module]:
    """Train model_name on CIFAR-10 (10 classes) with a plain SGD recipe: (metrics, model)."""
    seed_everything(pretrain.seed, on.deterministic)
    root = Path(pretrain.root or PROJECT_ROOT / "data" / "cifar10")
    data = read_cifar10(root, pretrain.download)
    images, labels = data["train"]
    if pretrain.train_size:
        images, labels = images[: pretrain.train_size], labels[: pretrain.train_size]
    train = _loader(images, labels, pretrain.batch_size, True, pretrain.seed, on.device)
    test = _loader(*data["test"], pretrain.batch_size, False, pretrain.seed, on.device)
    model = on.settings.prepare(build_model(model_name, num_classes=10).to(on.device), on.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=pretrain.lr, momentum=0.9,
                                weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=pretrain.epochs)
    criterion, step = torch.nn.CrossEntropyLoss(), GradientStep(on.settings, on.device)
    metrics: dict[str, float] = {}
    for epoch in range(1, pretrain.epochs + 1):
        seed_epoch(pretrain.seed, epoch, train)
        row = train_one_epoch(model, train, criterion, optimizer, on.device, epoch, on.settings,
                              step)
        answers = infer(model, test, on.device, on.settings)
        metrics = {"cifar10_train_acc": row[TRAIN_ACC], "cifar10_test_acc": float(
            np.mean(answers.true == answers.pred)), "cifar10_test_loss": answers.loss}
        tracker.log_metrics(metrics, step=epoch)
        log.info("CIFAR-10 epoch %d/%d: train acc %.2f%%, test acc %.2f%%", epoch,
                 pretrain.epochs, 100 * row[TRAIN_ACC], 100 * metrics["cifar10_test_acc"])
        schedule.step()
    return metrics, model


def _cached(path: Path) -> tuple[Path, dict] | None:
    sidecar = path.with_suffix(".json")
    if not (path.is_file() and sidecar.is_file()):
        return None
    run_id = json.loads(sidecar.read_text()).get("run_id")
    log.info("Reusing the CIFAR-10 checkpoint %s (pretraining run %s)", path, run_id)
    return path, {CIFAR10_RUN_TAG: str(run_id)}


def cifar10_weights(model_name: str, pretrain: Any, run_factory: RunFactory,
                    on: PretrainDevice = ON_CPU) -> tuple[Path, dict]:
    """The cached CIFAR-10 checkpoint (trained now, in its own tracked run, if missing) and the
    tags that tie a run using it to the pretraining run.

    Jobs that need one recipe at once pretrain it once: the first holds the recipe's lock while
    the others wait, then reuse its checkpoint. Pretraining keeps its randomness to itself, so
    the DR run that follows is the same on a cache miss and a cache hit."""
    path = checkpoint_path(model_name, pretrain, on)
    with exclusive(path.with_suffix(".lock")):
        if (found := _cached(path)) is not None:
            return found
        recipe = _recipe(model_name, pretrain, on)
        with preserved_randomness(cuda=on.device.type == "cuda"), \
                run_factory(f"cifar10-pretrain-{model_name}", recipe) as tracker:
            metrics, model = pretrain_on_cifar10(model_name, pretrain, tracker, on)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_torch_save(path, cpu_state_dict(model))
            run_id = getattr(tracker, "run_id", None)
        atomic_write_text(path.with_suffix(".json"), json.dumps(
            {"run_id": run_id, "recipe": recipe, "metrics": metrics}, indent=2) + "\n")
    return path, {CIFAR10_RUN_TAG: str(run_id)}
