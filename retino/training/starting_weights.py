"""Where a pretrained run's starting weights come from: `pretrain.source` names a source, and
each source is a function registered here (imagenet: the file given, or found in the torch hub
or Hugging Face cache, or downloaded there; cifar10: a ResNet pretrained on CIFAR-10 here first,
as a run of its own). A new source is one such function and its conf/pretrain/<name>.yaml (its
own settings: fields of PretrainConfig in retino/config/schema.py, and their entry in
_ONLY_WHEN of retino/config/params.py, so that other runs neither log nor hash them)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from retino.core.registry import Registry
from retino.models import timm_arch
from retino.models.pretrained import resolve_imagenet_weights, resolve_timm_weights
from retino.training.tracker import NullTracker

if TYPE_CHECKING:
    from retino.training.cifar10 import PretrainDevice, RunFactory

# (config, how to open a tracked run, where to pretrain) -> (weights file, tags of where from)
WeightsSource = Callable[[DictConfig, "RunFactory", "PretrainDevice"], tuple[Path, dict]]
PRETRAIN_SOURCES: Registry[WeightsSource] = Registry("pretrain.source")


@PRETRAIN_SOURCES.register("imagenet")
def imagenet(cfg: DictConfig, run_factory: RunFactory, on: PretrainDevice) -> tuple[Path, dict]:
    arch = timm_arch(cfg.model.name, cfg.model.get("arch"))
    if arch:  # timm's file format and its Hugging Face cache, not torchvision's
        return resolve_timm_weights(arch, cfg.pretrain.weights), {}
    return resolve_imagenet_weights(cfg.model.name, cfg.pretrain.variant,
                                    cfg.pretrain.weights), {}


@PRETRAIN_SOURCES.register("cifar10")
def cifar10(cfg: DictConfig, run_factory: RunFactory, on: PretrainDevice) -> tuple[Path, dict]:
    # imported here: validation reads this registry, and a bad value must not wait for the
    # CIFAR-10 training stack (its loop, its evaluation)
    from retino.training.cifar10 import cifar10_weights

    return cifar10_weights(cfg.model.name, cfg.pretrain, run_factory, on)


def untracked_run(name: str, params: dict) -> AbstractContextManager:
    """A RunFactory that tracks nothing (a run without MLflow)."""
    return nullcontext(NullTracker())


def pretrained_weights(cfg: DictConfig, run_factory: RunFactory,
                       on: PretrainDevice) -> tuple[Path | None, dict]:
    """The weights file to start from (found, downloaded, or pretrained now on CIFAR-10, on
    `on`: the run's device and precision) and the tags tying the run to where they came from;
    (None, {}) when training from scratch."""
    if not cfg.pretrained:
        return None, {}
    return PRETRAIN_SOURCES[cfg.pretrain.source](cfg, run_factory, on)
