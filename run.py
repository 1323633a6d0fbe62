"""retino's entry point: compose the config with Hydra, train and evaluate, log to MLflow.

    python run.py                                   # ResNet18 on the embedded demo data
    python run.py -m model=resnet18,resnet50 pretrained=true,false   # the four-way comparison
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from retino.config import flatten_config, register_configs, run_name, validate_config
from retino.errors import RetinoError

log = logging.getLogger("retino")
register_configs()


def tracked_experiment(cfg: DictConfig) -> float:
    """Run the experiment inside an MLflow run; returns the final test accuracy."""
    from retino.experiment import run_experiment  # heavy imports after validation
    from retino.tracking import git_commit, mlflow_run

    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    tags = {"hydra_overrides": " ".join(hydra_cfg.overrides.task) or "(none)",
            "git_commit": git_commit(), "output_dir": str(out_dir)}
    with mlflow_run(cfg.experiment, run_name(cfg), flatten_config(cfg), tags) as tracker:
        result = run_experiment(cfg, out_dir, tracker)
    return result.history[-1]["test_acc"]


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from retino.models import MODEL_BUILDERS
    from retino.pretrained import PRETRAIN_SOURCES

    try:
        validate_config(cfg, MODEL_BUILDERS, PRETRAIN_SOURCES)
        return tracked_experiment(cfg)
    except RetinoError as err:
        log.error("%s", err)
        if HydraConfig.get().mode == RunMode.RUN:
            sys.exit(2)  # a user error: the message says it all, no traceback
        raise  # in a sweep, Hydra runs the other jobs and reports this one at the end


if __name__ == "__main__":
    main()
