"""What a run optimises, by name: the optimizers (`optimizer.name`), learning-rate schedules
(`schedule.name`) and training losses (`imbalance`), each a retino.core.registry Registry its
builders are registered in; and `registered_choices`, every registry a config key chooses from,
which validation lists in its errors (a name not registered never falls back to a default).

An optimizer of one's own is a function registered here and a file in conf/optimizer/
(docs/architecture.md, "A head, an optimizer, a schedule, a loss")."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from retino.core.grades import NUM_GRADES
from retino.core.registry import Registry
from retino.data.load.loaders import grade_histogram
from retino.models import HEADS, NETWORKS, RESNETS
from retino.models.heads import GradeRegressionLoss
from retino.models.timm_backbones import TimmArchitectures
from retino.training.starting_weights import PRETRAIN_SOURCES

# (config, the parameters that learn) -> optimizer
OPTIMIZERS: Registry[Callable[[DictConfig, list[nn.Parameter]], torch.optim.Optimizer]] = \
    Registry("optimizer.name")
# (config, optimizer) -> schedule, stepped once per epoch
SCHEDULES: Registry[Callable[[DictConfig, torch.optim.Optimizer], object]] = \
    Registry("schedule.name")
# (the training split's grades) -> the loss; balanced_sampler balances the batches instead
LOSSES: Registry[Callable[[list[int]], nn.CrossEntropyLoss]] = Registry("imbalance")


@OPTIMIZERS.register("sgd")
def sgd(cfg: DictConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.optimizer.momentum,
                           weight_decay=cfg.optimizer.weight_decay)


@OPTIMIZERS.register("adamw")
def adamw(cfg: DictConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.optimizer.weight_decay)


@SCHEDULES.register("constant")
def constant(cfg: DictConfig, optimizer: torch.optim.Optimizer):
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


@SCHEDULES.register("cosine")
def cosine(cfg: DictConfig, optimizer: torch.optim.Optimizer):
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)


@SCHEDULES.register("step")
def step(cfg: DictConfig, optimizer: torch.optim.Optimizer):
    return torch.optim.lr_scheduler.StepLR(optimizer, cfg.schedule.step_size, cfg.schedule.gamma)


def class_weights(grades: list[int]) -> torch.Tensor:
    """Inverse-frequency weights, mean 1 over present grades (absent grades weigh 0)."""
    counts = grade_histogram(grades).astype(float)
    present = counts > 0
    weights = np.zeros(NUM_GRADES)
    weights[present] = counts[present].sum() / (present.sum() * counts[present])
    return torch.tensor(weights, dtype=torch.float32)


@LOSSES.register("none")
def unweighted(grades: list[int]) -> nn.CrossEntropyLoss:
    return nn.CrossEntropyLoss()


@LOSSES.register("weighted_loss")
def weighted(grades: list[int]) -> nn.CrossEntropyLoss:
    return nn.CrossEntropyLoss(weight=class_weights(grades))


LOSSES.add("balanced_sampler", unweighted)  # the sampler, not the loss, evens the grades out


def registered_choices() -> dict[str, Iterable[str]]:
    """Config key -> the names its registry knows, for validate_config."""
    return {"model.name": NETWORKS, "head.name": HEADS, "pretrain.source": PRETRAIN_SOURCES,
            "optimizer.name": OPTIMIZERS, "schedule.name": SCHEDULES, "imbalance": LOSSES,
            "model.arch": TimmArchitectures(), "cifar10_models": RESNETS}


def build_optimizer(cfg: DictConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]  # only the head when frozen
    return OPTIMIZERS[cfg.optimizer.name](cfg, params)


def build_scheduler(cfg: DictConfig, optimizer: torch.optim.Optimizer):
    """Learning-rate schedule, stepped once per epoch."""
    return SCHEDULES[cfg.schedule.name](cfg, optimizer)


def build_criterion(cfg: DictConfig, train_grades: list[int]) -> nn.Module:
    """The training loss: cross-entropy (class-weighted for imbalance=weighted_loss), or the
    regression head's error on the grade, weighted the same way."""
    loss = LOSSES[cfg.imbalance](train_grades)
    if cfg.head.name != "regression":
        return loss
    return GradeRegressionLoss(cfg.head.loss, loss.weight)
