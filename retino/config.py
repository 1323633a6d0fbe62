"""Config schemas (dataclasses) registered with Hydra, value validation and flat params for logging.

Hydra checks types and unknown keys when it composes (via these schemas); `validate_config` checks
values and choices before any data is read, and names the key and the allowed values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from retino.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # retino/precision.py maps each to its dtype
SELECTION_METRICS = ("val_qwk", "val_acc", "val_macro_f1", "val_referable_auc", "val_loss")
DATASETS = ("demo", "kaggle")
DECODERS = ("cpu", "gpu")  # data.decode: where the JPEGs are decoded
FREEZE_MODES = ("none", "backbone")
STRIDE = 32  # a ResNet halves the input five times; sizes must divide evenly


@dataclass
class ModelConfig:
    name: str = "resnet18"


@dataclass
class PretrainConfig:
    source: str = "imagenet"
    variant: str = "IMAGENET1K_V1"  # torchvision's weights; V1 is what `pretrained=True` loaded
    weights: Optional[str] = None  # a local state-dict file, for machines without internet
    # source=cifar10: the pretraining recipe (its checkpoint is cached by all of these)
    root: Optional[str] = None  # holds cifar-10-batches-py/ (default <project>/data/cifar10)
    download: bool = True
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    seed: int = 0
    train_size: int = 0  # 0: all 50,000 images
    cache_dir: Optional[str] = None  # default <project>/data/pretrained


@dataclass
class DataConfig:
    name: str = "demo"
    root: Optional[str] = None  # kaggle: folder of the four CSVs; demo: where it is generated
    image_dir: str = "images"  # relative to root unless absolute
    train_size: int = 1000  # demo only: number of generated images
    test_size: int = 250
    image_size: int = 128  # demo only: side of the generated JPEGs
    seed: int = 2024  # demo only: the data stays the same when the training seed changes
    # DataLoader processes: "auto" (none training on a CPU; feeding a GPU, one per core this job
    # has, less one) or a count. Not part of a run's identity: results are the same for any.
    num_workers: Any = "auto"
    persistent_workers: bool = True  # keep the worker processes from epoch to epoch
    prefetch_factor: int = 2  # batches each worker prepares ahead
    # Validation split carved from train by patient: it chooses the epoch kept, never the test set.
    val_fraction: float = 0.1  # 0: none, the lab's protocol (the last epoch is kept)
    val_seed: int = 0  # fixes the validation split, independent of the training seed
    # Where JPEGs are decoded: cpu (in the loader workers) or gpu (a batch at a time on the
    # training device, nvJPEG: for hosts with too few cores per GPU; JPEG files only).
    decode: str = "cpu"


@dataclass
class AugmentationConfig:
    name: str = "flip"
    hflip: float = 0.5  # probabilities
    vflip: float = 0.5
    rotate_degrees: float = 0.0
    color_jitter: float = 0.0
    crop_scale_min: float = 1.0  # < 1 enables random resized crops of that minimum area


@dataclass
class ResolutionConfig:
    size: int = 64  # pixels; the network input is size x size


@dataclass
class FreezeConfig:
    name: str = "none"


@dataclass
class OptimizerConfig:
    name: str = "adamw"
    momentum: float = 0.9  # sgd only
    weight_decay: float = 1e-4


@dataclass
class ScheduleConfig:
    name: str = "cosine"
    step_size: int = 10  # step only: epochs between decays
    gamma: float = 0.1


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    resolution: ResolutionConfig = field(default_factory=ResolutionConfig)
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    pretrained: bool = False  # start from pretrain.source's weights (imagenet, cifar10)
    epochs: int = 10  # passes over the training images
    batch_size: int = 32  # images per training step
    lr: float = 1e-3  # the optimizer's learning rate
    seed: int = 0  # weights, order and augmentation of training (the data has its own)
    device: str = "auto"  # auto (a CUDA GPU when usable, else the CPU), cpu, cuda
    deterministic: bool = False  # deterministic kernels (slower), for exact reproduction
    imbalance: str = "none"  # none, weighted_loss (by grade frequency), balanced_sampler
    experiment: str = "retino"  # the MLflow experiment the run goes to
    # Continue an interrupted run of this config, code and data from its last.pt; in a study,
    # skip one that FINISHED; false: always a new run.
    resume: bool = True
    cam_per_grade: int = 1  # test images per grade in class_activation_maps.png (0: none)
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU), fp32, bf16, fp16
    channels_last: Optional[bool] = None  # null: on for CUDA only
    grad_clip: float = 0.0  # max gradient norm, 0 = off
    compile: bool = False  # torch.compile the model: minutes to compile, then faster on GPUs
    log_system_metrics: bool = False  # CPU, memory, GPU use as system/* metrics in MLflow
    log_model: bool = True  # the trained model as an MLflow model (runs:/<id>/model)
    # A study's best configuration (by the validation metric) into the Model Registry by this name
    register_model: Optional[str] = None
    # The epoch a run keeps and reports on the test set: the best by this validation metric.
    selection_metric: str = "val_qwk"  # val_loss: the lowest; the others: the highest
    # Referable DR (grade >= 2): the operating point chosen on validation has this sensitivity.
    referable_sensitivity_target: float = 0.9
    bootstrap_rounds: int = 1000  # 95% intervals of the test metrics, resampling patients (0: off)


def register_configs() -> None:
    """Register the schema (`retino_schema`), the --help page written from it, and the launcher
    presets' sizing resolvers."""
    from retino.devices import gpus_per_local_job, parallel_jobs
    from retino.help import help_text

    store = ConfigStore.instance()
    store.store(name="retino_schema", node=Config)
    store.store(group="hydra/help", name="retino_help",  # python run.py --help
                node={"app_name": "retino", "header": "", "footer": "",
                      "template": help_text(Config)})
    for name, resolver in (("retino_parallel_jobs", parallel_jobs),
                           ("retino_gpus_per_local_job", gpus_per_local_job)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


def _check(problems: list[str], ok: bool, message: str) -> None:
    if not ok:
        problems.append(message)


def _check_choice(problems: list[str], key: str, value: Any, allowed: Iterable[str]) -> None:
    allowed = list(allowed)
    _check(problems, value in allowed, f"{key}={value!r} is not valid; choose one of: "
                                       f"{', '.join(allowed)}.")


def _check_training(cfg: DictConfig, problems: list[str]) -> None:
    _check(problems, cfg.epochs >= 1, f"epochs={cfg.epochs} must be at least 1.")
    _check(problems, cfg.batch_size >= 1, f"batch_size={cfg.batch_size} must be at least 1.")
    _check(problems, cfg.lr > 0, f"lr={cfg.lr} must be a positive number (e.g. 0.001).")
    _check(problems, cfg.seed >= 0, f"seed={cfg.seed} must be 0 or more.")
    _check(problems, cfg.cam_per_grade >= 0 and cfg.bootstrap_rounds >= 0,
           f"cam_per_grade={cfg.cam_per_grade} and bootstrap_rounds={cfg.bootstrap_rounds} must "
           "be 0 (off) or more.")
    _check(problems, bool(cfg.experiment.strip()), "experiment= must name an MLflow experiment.")
    opt, schedule = cfg.optimizer, cfg.schedule
    _check(problems, opt.weight_decay >= 0,
           f"optimizer.weight_decay={opt.weight_decay} must be 0 or more.")
    _check(problems, 0 <= opt.momentum < 1, f"optimizer.momentum={opt.momentum} must be in [0, 1).")
    pretrain = cfg.pretrain
    _check(problems, pretrain.epochs >= 1 and pretrain.batch_size >= 2 and pretrain.lr > 0
           and pretrain.train_size >= 0, f"pretrain.epochs={pretrain.epochs} (>= 1), "
           f"pretrain.batch_size={pretrain.batch_size} (>= 2), pretrain.lr={pretrain.lr} (> 0) "
           f"and pretrain.train_size={pretrain.train_size} (>= 0, 0 = all) must all hold.")
    _check(problems, schedule.step_size >= 1,
           f"schedule.step_size={schedule.step_size} must be at least 1 (epochs).")
    _check(problems, 0 < schedule.gamma <= 1, f"schedule.gamma={schedule.gamma} must be in (0, 1].")


def _check_input(cfg: DictConfig, problems: list[str]) -> None:
    size = cfg.resolution.size
    _check(problems, size >= STRIDE and size % STRIDE == 0,
           f"resolution.size={size} cannot be taken by a ResNet: use a multiple of {STRIDE} "
           f"of at least {STRIDE} (e.g. 64, 128, 224, 512).")
    # BatchNorm needs two values per channel: one 32 px image has a 1x1 last feature map.
    _check(problems, cfg.batch_size < 1 or cfg.batch_size * max(size // STRIDE, 1) ** 2 >= 2,
           f"batch_size={cfg.batch_size} with resolution.size={size} leaves BatchNorm one value "
           "per channel; use batch_size=2 or more, or a larger resolution.")
    aug = cfg.augmentation
    for key in ("hflip", "vflip"):
        _check(problems, 0 <= aug[key] <= 1,
               f"augmentation.{key}={aug[key]} must be a probability in [0, 1].")
    _check(problems, 0 <= aug.rotate_degrees <= 180,
           f"augmentation.rotate_degrees={aug.rotate_degrees} must be in [0, 180].")
    _check(problems, 0 <= aug.color_jitter < 1,
           f"augmentation.color_jitter={aug.color_jitter} must be in [0, 1).")
    _check(problems, 0 < aug.crop_scale_min <= 1,
           f"augmentation.crop_scale_min={aug.crop_scale_min} must be in (0, 1].")


def _check_data(data: DictConfig, problems: list[str]) -> None:
    _check_choice(problems, "data.name", data.name, DATASETS)
    if data.name == "kaggle":
        _check(problems, bool(data.root), "data=kaggle needs data.root=/path/to/folder holding "
                                          "train_img.csv, train_label.csv, test_img.csv, "
                                          "test_label.csv.")
        _check(problems, not data.root or Path(data.root).expanduser().is_dir(),
               f"data.root={data.root} is not a folder: point it at the folder that holds "
               "train_img.csv, train_label.csv, test_img.csv and test_label.csv.")
    if data.name == "demo":
        _check(problems, data.train_size >= 5 and data.test_size >= 5,
               f"data.train_size={data.train_size} and data.test_size={data.test_size} must each "
               "be at least 5, so that every grade can appear.")
        _check(problems, data.image_size >= STRIDE,
               f"data.image_size={data.image_size} must be at least {STRIDE}.")
    workers = data.num_workers
    is_count = isinstance(workers, int) and not isinstance(workers, bool)
    _check(problems, workers == "auto" or (is_count and workers >= 0),
           f"data.num_workers={workers!r} must be auto or a whole number >= 0.")
    _check(problems, 0 <= data.val_fraction <= 0.5,
           f"data.val_fraction={data.val_fraction} must be in [0, 0.5] (0: no validation split).")
    _check_choice(problems, "data.decode", data.decode, DECODERS)
    _check(problems, data.prefetch_factor >= 1,
           f"data.prefetch_factor={data.prefetch_factor} must be at least 1.")


def validate_config(cfg: DictConfig, registered: Mapping[str, Iterable[str]]) -> None:
    """Raise ConfigError listing every invalid value, with the key and what it may be.

    registered: dotted key -> the names a registry knows (models, optimizers, ...), given by the
    caller so that this module needs no torch."""
    problems: list[str] = []
    for key, names in registered.items():
        _check_choice(problems, key, OmegaConf.select(cfg, key), names)
    _check_choice(problems, "device", cfg.device, DEVICES)
    _check_choice(problems, "freeze.name", cfg.freeze.name, FREEZE_MODES)
    _check_choice(problems, "precision", cfg.precision, PRECISIONS)
    _check(problems, cfg.grad_clip >= 0, f"grad_clip={cfg.grad_clip} must be 0 (off) or more.")
    _check_choice(problems, "selection_metric", cfg.selection_metric, SELECTION_METRICS)
    _check(problems, 0 < cfg.referable_sensitivity_target <= 1,
           f"referable_sensitivity_target={cfg.referable_sensitivity_target} must be in (0, 1].")
    _check_training(cfg, problems)
    _check_input(cfg, problems)
    _check_data(cfg.data, problems)
    if problems:
        raise ConfigError("Invalid configuration:\n  - " + "\n  - ".join(problems))


def flatten_config(cfg: DictConfig | Mapping, prefix: str = "") -> dict[str, Any]:
    """Every leaf as a dotted key: {'model.name': 'resnet18', 'epochs': 10, ...}."""
    tree = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, prefix=f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


# Keys that mean nothing unless their option is chosen (no demo image count for a Kaggle run).
_ONLY_WHEN = {
    "data.train_size": ("data.name", "demo"), "data.test_size": ("data.name", "demo"),
    "data.image_size": ("data.name", "demo"), "data.seed": ("data.name", "demo"),
    "optimizer.momentum": ("optimizer.name", "sgd"),
    "schedule.step_size": ("schedule.name", "step"), "schedule.gamma": ("schedule.name", "step"),
    "pretrain.variant": ("pretrain.source", "imagenet"),
    "pretrain.weights": ("pretrain.source", "imagenet"),
    **{f"pretrain.{key}": ("pretrain.source", "cifar10") for key in (
        "root", "download", "epochs", "batch_size", "lr", "seed", "train_size", "cache_dir")},
}


def params_to_log(cfg: DictConfig) -> dict[str, Any]:
    """Every config leaf that applies to this run, as dotted keys."""
    flat = flatten_config(cfg)
    return {k: v for k, v in flat.items()
            if k not in _ONLY_WHEN or flat[_ONLY_WHEN[k][0]] == _ONLY_WHEN[k][1]}
