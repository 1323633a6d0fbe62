"""A config as flat dotted params (`model.name`, `data.val_fraction`, ...): what MLflow logs, what
a run's identity hashes and what a reproduction turns back into overrides."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf


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
    "model.arch": ("model.name", "timm"),
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


def override_value(value: object) -> str:
    """A value in Hydra's override grammar, read back whole: null, true/false, numbers, and
    quoted strings (a path with a space, a comma or an '=')."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"
