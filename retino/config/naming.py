"""A run's name in MLflow: its choices at a glance, and in a study the axes the study sweeps."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from retino.core.keys import NAMED_AXES


def run_name(cfg: DictConfig, swept: Iterable[str] = ()) -> str:
    """A readable name from the choices, e.g. 'resnet50-pretrained-frozen-224px'; in a study,
    followed by each other axis it sweeps, e.g. 'resnet18-scratch-64px seed=1 lr=0.01'."""
    parts = [cfg.model.get("arch") or cfg.model.name, "pretrained" if cfg.pretrained else "scratch"]
    if cfg.pretrained and cfg.pretrain.source != "imagenet":
        parts[1] = f"pretrained-{cfg.pretrain.source}"
    if cfg.freeze.name == "backbone":
        parts.append("frozen")
    parts.append(f"{cfg.resolution.size}px")
    axes = [f"{key}={_axis_value(cfg, key)}" for key in swept if key not in NAMED_AXES]
    return " ".join(["-".join(parts), *axes])


def _axis_value(cfg: DictConfig, key: str) -> Any:
    """A swept key's value: a config group by its option's name, a plain key by its value."""
    value = OmegaConf.select(cfg, key)
    if isinstance(value, DictConfig):
        return value.get("name", "")
    return f"{value:.4g}" if isinstance(value, float) else value  # a search's lr=0.001252
