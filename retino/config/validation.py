"""Value checks of a composed config, before any data is read: each problem names the key and
what it may be, all of them in one error."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from retino.config.schema import (
    BAD_PHOTOGRAPH_MODES,
    COPY_MODES,
    DATASETS,
    DECODERS,
    DEVICES,
    FREEZE_MODES,
    PRECISIONS,
    QUALITY_CHECKS,
    REGRESSION_LOSSES,
    SELECTION_METRICS,
    STRIDE,
    TIMM_MODEL,
    TTA_MODES,
    has_validation,
)
from retino.core.errors import ConfigError


def _check(problems: list[str], ok: bool, message: str) -> None:
    if not ok:
        problems.append(message)


_LISTED = 30  # longer lists of choices (timm's architectures) show the close matches only


def _check_choice(problems: list[str], key: str, value: Any, allowed: Iterable[str]) -> None:
    allowed = list(allowed)
    if value in allowed:
        return
    if len(allowed) <= _LISTED:
        problems.append(f"{key}={value!r} is not valid; choose one of: {', '.join(allowed)}.")
        return
    close = difflib.get_close_matches(str(value), allowed, n=8, cutoff=0.6)
    problems.append(f"{key}={value!r} is not valid (one of {len(allowed)} names); "
                    + (f"close matches: {', '.join(close)}." if close else "no close match."))


# Keys of `registered` checked with the model rather than as plain choices.
_MODEL_KEYS = ("model.arch", "cifar10_models")


def _check_model(cfg: DictConfig, registered: Mapping[str, Iterable[str]],
                 problems: list[str]) -> None:
    """model.arch, which only model=timm reads (registered['model.arch']: the architectures
    timm knows, a pretrained tag after the dot aside), and a CIFAR-10 start, which only some
    models have (registered['cifar10_models'])."""
    name, arch = cfg.model.name, cfg.model.get("arch")
    if name == TIMM_MODEL:
        _check(problems, bool(arch), f"model={TIMM_MODEL} needs model.arch=<a timm "
                                     "architecture>, e.g. model.arch=efficientnet_b4.")
        if arch and "model.arch" in registered:
            _check_choice(problems, "model.arch", arch.split(".")[0], registered["model.arch"])
    else:
        _check(problems, arch is None, f"model.arch={arch} is read by model={TIMM_MODEL} only; "
                                       f"model={name} is one architecture: drop model.arch.")
    cifar10_models = list(registered.get("cifar10_models", [name]))
    _check(problems, not (cfg.pretrained and cfg.pretrain.source == "cifar10")
           or name in cifar10_models,
           f"pretrain=cifar10 pretrains {', '.join(cifar10_models)} only (retino trains them on "
           f"CIFAR-10 itself); model={name} starts from pretrain=imagenet or from scratch.")


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
    folds = data.get("folds")
    _check(problems, folds is None or folds >= 2,
           f"data.folds={folds} must be 2 or more (cross-validation), or null (off).")
    _check(problems, folds is None or 0 <= data.get("fold", 0) < folds,
           f"data.fold={data.get('fold')} must be in 0..{(folds or 1) - 1} (data.folds={folds}).")
    _check_choice(problems, "data.decode", data.decode, DECODERS)
    _check(problems, data.prefetch_factor >= 1,
           f"data.prefetch_factor={data.prefetch_factor} must be at least 1.")


def _check_quality(quality: DictConfig, problems: list[str]) -> None:
    _check_choice(problems, "quality.name", quality.name, QUALITY_CHECKS)
    for key in ("min_disc_fraction", "max_rim_fit", "max_dark_fraction",
                "max_bright_fraction", "max_stray_light"):
        _check(problems, 0 <= quality[key] <= 1, f"quality.{key}={quality[key]} must be in [0, 1].")
    for key in ("dark_level", "bright_level"):
        _check(problems, 0 <= quality[key] <= 255,
               f"quality.{key}={quality[key]} must be a pixel level in [0, 255].")
    for key in ("min_contrast", "min_red_ratio", "min_red_blue_ratio", "min_sharpness"):
        _check(problems, quality[key] >= 0, f"quality.{key}={quality[key]} must be 0 or more.")


def _check_head(head: DictConfig, problems: list[str]) -> None:
    """A loss is the regression head's choice only (the others' is their likelihood)."""
    loss = head.get("loss")
    if head.name == "regression":
        _check_choice(problems, "head.loss", loss, REGRESSION_LOSSES)
    else:
        _check(problems, loss is None, f"head.loss={loss!r} applies to head=regression only; "
                                       f"head={head.name} trains on its likelihood.")


def validate_config(cfg: DictConfig, registered: Mapping[str, Iterable[str]]) -> None:
    """Raise ConfigError listing every invalid value, with the key and what it may be.

    registered: dotted key -> the names a registry knows (models, optimizers, ...), given by the
    caller so that this module needs no torch; also 'model.arch' (timm's architectures) and
    'cifar10_models' (the models pretrain=cifar10 can pretrain), see _check_model."""
    problems: list[str] = []
    for key, names in registered.items():
        if key not in _MODEL_KEYS:
            _check_choice(problems, key, OmegaConf.select(cfg, key), names)
    _check_model(cfg, registered, problems)
    _check_choice(problems, "device", cfg.device, DEVICES)
    _check_choice(problems, "freeze.name", cfg.freeze.name, FREEZE_MODES)
    _check_choice(problems, "precision", cfg.precision, PRECISIONS)
    _check(problems, cfg.grad_clip >= 0, f"grad_clip={cfg.grad_clip} must be 0 (off) or more.")
    _check_choice(problems, "selection_metric", cfg.selection_metric, SELECTION_METRICS)
    _check_choice(problems, "tta", cfg.get("tta", "none"), TTA_MODES)
    _check_choice(problems, "bad_photographs", cfg.get("bad_photographs", "refuse"),
                  BAD_PHOTOGRAPH_MODES)
    _check_choice(problems, "copies_across_splits", cfg.get("copies_across_splits", "refuse"),
                  COPY_MODES)
    _check_head(cfg.head, problems)
    decay = cfg.get("ema_decay")
    _check(problems, decay is None or 0 < decay < 1,
           f"ema_decay={decay} must be between 0 and 1 (e.g. 0.999), or null (off).")
    patience = cfg.get("early_stopping_patience")
    _check(problems, patience is None or patience >= 1,
           f"early_stopping_patience={patience} must be at least 1, or null (off).")
    _check(problems, patience is None or has_validation(cfg.data),
           "early_stopping_patience watches the validation metric: set data.val_fraction > 0 "
           "(e.g. 0.1), or early_stopping_patience=null.")
    _check(problems, 0 < cfg.referable_sensitivity_target <= 1,
           f"referable_sensitivity_target={cfg.referable_sensitivity_target} must be in (0, 1].")
    _check(problems, 0 < cfg.referable_specificity_target <= 1,
           f"referable_specificity_target={cfg.referable_specificity_target} must be in (0, 1].")
    _check(problems, cfg.get("max_megapixels", 50.0) > 0,
           f"max_megapixels={cfg.get('max_megapixels')} must be above 0 (e.g. 50).")
    prevalence = cfg.get("programme_prevalence")
    _check(problems, prevalence is None or 0 < prevalence < 1,
           f"programme_prevalence={prevalence} must be a share in (0, 1), e.g. 0.07, or null.")
    _check_training(cfg, problems)
    _check_input(cfg, problems)
    _check_data(cfg.data, problems)
    if "quality" in cfg:  # configs of runs made before it had none
        _check_quality(cfg.quality, problems)
    if problems:
        raise ConfigError("Invalid configuration:\n  - " + "\n  - ".join(problems))
