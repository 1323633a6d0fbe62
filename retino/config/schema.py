"""The config schema: every key of a run, its type, its default and its meaning (the comment
beside it), as dataclasses. The one source of the defaults: conf/config.yaml only chooses group
options, and `run.py --help` and the docs' configuration reference are written from here.

Hydra checks types and unknown keys against it when it composes (registered by
retino/config/registration.py); retino/config/validation.py checks values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from retino.core.metric_names import VAL_ACC, VAL_LOSS, VAL_MACRO_F1, VAL_QWK, VAL_REFERABLE_AUC

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # retino/training/precision.py maps each to its dtype
SELECTION_METRICS = (VAL_QWK, VAL_ACC, VAL_MACRO_F1, VAL_REFERABLE_AUC, VAL_LOSS)
DATASETS = ("demo", "kaggle")
DECODERS = ("cpu", "gpu")  # data.decode: where the JPEGs are decoded
FREEZE_MODES = ("none", "backbone")
BAD_PHOTOGRAPH_MODES = ("refuse", "skip")  # bad_photographs: what training does with them
COPY_MODES = ("refuse", "allow")  # copies_across_splits
TTA_MODES = ("none", "flips")  # tta: test-time augmentation
REGRESSION_LOSSES = ("mse", "smooth_l1")  # head.loss of head=regression
QUALITY_CHECKS = ("heuristic", "off")  # quality.name: is each photograph checked before grading
STRIDE = 32  # a ResNet halves the input five times; sizes must divide evenly
TIMM_MODEL = "timm"  # model.name of any timm architecture, named by model.arch


@dataclass
class ModelConfig:
    name: str = "resnet18"  # the network: an option of conf/model/ (--help lists them, with sizes)
    # model=timm: the timm architecture, optionally with its pretrained tag
    # (efficientnet_b4, convnext_small.fb_in22k_ft_in1k); null for every other model
    arch: Optional[str] = None


@dataclass
class HeadConfig:
    name: str = "classification"  # classification (five scores), ordinal, regression
    loss: Optional[str] = None  # head=regression only: mse or smooth_l1


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
    # Cross-validation: the training split cut into `folds` by patient (val_seed), fold `fold`
    # validating (val_fraction is then not used); sweeps/cross_validation.yaml runs every fold.
    folds: Optional[int] = None  # null: one validation split of val_fraction
    fold: int = 0
    # Where JPEGs are decoded: cpu (in the loader workers) or gpu (a batch at a time on the
    # training device, nvJPEG: for hosts with too few cores per GPU; JPEG files only).
    decode: str = "cpu"


def has_validation(data: Any) -> bool:
    """Whether a run's data config carves a validation split (a fraction, or a fold)."""
    return data.val_fraction > 0 or bool(data.get("folds"))


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
class QualityConfig:
    """Is a photograph gradable (retino/data/prepare/quality.py; docs/quality.md: how the defaults
    were chosen). heuristic: measured on each photograph; off: every photograph is graded."""

    name: str = "heuristic"
    min_disc_fraction: float = 0.15  # the fundus disc's least share of the frame
    max_rim_fit: float = 0.15  # the field is a disc, whole or cut: 1 - overlap with its circle
    min_contrast: float = 0.03  # std / mean of brightness inside the disc; below: blank
    min_red_ratio: float = 0.9  # mean red / mean green in the disc: red, orange or yellow
    min_red_blue_ratio: float = 1.2  # mean red / mean blue in the disc: not grey, not blue
    dark_level: int = 40  # brightest channel below this: too dark to read
    max_dark_fraction: float = 0.5  # of the disc
    bright_level: int = 250  # every channel at or above this: clipped white
    max_bright_fraction: float = 0.25  # of the disc
    max_stray_light: float = 0.03  # share of the disc whose blue is above its green: flare, haze
    min_sharpness: float = 0.55  # green's 1-2 px detail / its 2-4 px detail, disc at 384 px


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
    head: HeadConfig = field(default_factory=HeadConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    resolution: ResolutionConfig = field(default_factory=ResolutionConfig)
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
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
    # The trained model's cost as cost_* metrics: parameters, weights MB, GFLOPs and CPU
    # latency per image at batch 1 and 32 (a few seconds at the end of the run)
    measure_cost: bool = True
    # Each run's figures: accuracy per epoch, confusion matrix, referable ROC, calibration,
    # decision curve, activation maps (about a second a run). false: the same numbers, tables
    # and report without the pictures, for searches of many runs (and the tests); a study all
    # of whose runs have it false draws none of its own either.
    plots: bool = True
    # A study's best configuration (by the validation metric) into the Model Registry by this name
    register_model: Optional[str] = None
    # The epoch a run keeps and reports on the test set: the best by this validation metric.
    selection_metric: str = VAL_QWK  # val_loss: the lowest; the others: the highest
    # Evaluate, select and keep the exponential moving average of the weights, updated after
    # every step with this decay (e.g. 0.999; null: the weights as trained).
    ema_decay: Optional[float] = None
    # Test-time augmentation at every evaluation, predict and the served model: none, or flips
    # (grade probabilities averaged over the four flips of each image).
    tta: str = "none"
    # Stop after this many epochs without a better selection metric (null: train every epoch).
    early_stopping_patience: Optional[int] = None
    # Referable DR (grade >= 2): the operating point chosen on validation has this sensitivity.
    referable_sensitivity_target: float = 0.9
    # ... and a second, high-specificity one (screening reports give both), chosen the same way.
    referable_specificity_target: float = 0.9
    # The share of referable DR among the people a screening programme sees (e.g. 0.07): the
    # screening report adds PPV and NPV at it beside the test set's own (null: the test set's).
    programme_prevalence: Optional[float] = None
    # The largest photograph decoded, in megapixels (read from its header first): training from
    # a folder of photographs, predict and the served model refuse larger ones by name.
    max_megapixels: float = 50.0
    # Photographs of a folder no prepare checked that cannot be read (empty, truncated, not an
    # image, too small or too large): refuse (stop before training, naming each) or skip (train
    # without them, listed in the run's skipped_photographs.csv and counted).
    bad_photographs: str = "refuse"
    # A test or validation photograph that is, under another name, a photograph the model
    # learns from (found from its pixels): refuse (stop, naming both) or allow (go on; the
    # count is a tag of the run).
    copies_across_splits: str = "refuse"
    bootstrap_rounds: int = 1000  # 95% intervals of the test metrics, resampling patients (0: off)
