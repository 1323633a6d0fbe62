"""retino's entry point: compose the config with Hydra, train and evaluate, log to MLflow.

    python run.py                                   # ResNet18 on the embedded demo data
    python run.py -m model=resnet18,resnet50 pretrained=true,false   # the four-way comparison

Thin on purpose: Hydra's facts about the job become a plain JobContext, and retino.jobs owns the
lifecycle (validate, decide skip / resume / new, MLflow run, training, error policy).
"""

from __future__ import annotations

from retino.core.collector import fewer_full_collections

# Before the imports below, which make most of the objects it would walk: hence E402 here.
fewer_full_collections()

import math
import os
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from retino.config.registration import register_configs
from retino.core.names import REPRODUCES_ENV
from retino.jobs.launchers import jobs_at_once, register_resolvers
from retino.jobs.lifecycle import JobContext, run_job
from retino.jobs.signals import handle_stop_signals
from retino.studies.callbacks import parent_run_id, study_guard, swept_in
from retino.studies.reproduction import REPRODUCE_GROUP, original_run

register_configs()
register_resolvers()


def job_context() -> JobContext:
    """The job's facts from Hydra, as plain values."""
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    sweep_dir = Path(hydra_cfg.sweep.dir).resolve() if multirun else None
    return JobContext(
        output_dir=Path(hydra_cfg.runtime.output_dir).resolve(),
        overrides=tuple(hydra_cfg.overrides.task), multirun=multirun, sweep_dir=sweep_dir,
        job_num=hydra_cfg.job.num if multirun else 0,
        parent_run_id=parent_run_id(sweep_dir) if multirun else None,
        # a study's reproduction names each job's original run (retino/studies/reproduction.py)
        reproduces=original_run(hydra_cfg.runtime.choices.get(REPRODUCE_GROUP))
        or os.environ.get(REPRODUCES_ENV),
        jobs_at_once=jobs_at_once(hydra_cfg.launcher) if multirun else 1,
        swept=swept_in(sweep_dir) if multirun else ())


class TrialFailed(RuntimeError):
    """A search trial without a score: its run failed (the error is in its MLflow run)."""


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    handle_stop_signals()  # again here: a launcher's worker process runs jobs too
    score = run_job(cfg, job_context())
    if math.isnan(score) and "optuna" in str(HydraConfig.get().sweeper.get("_target_", "")):
        # Optuna records a raised trial as failed and searches on; a nan it cannot take.
        raise TrialFailed("This trial has no validation score (its run failed); the search "
                          "goes on.")
    return score


if __name__ == "__main__":
    handle_stop_signals()
    with study_guard():  # a sweep's parent run ends FAILED or KILLED on every early exit
        main()
