"""retino's entry point: compose the config with Hydra, train and evaluate, log to MLflow.

    python run.py                                   # ResNet18 on the embedded demo data
    python run.py -m model=resnet18,resnet50 pretrained=true,false   # the four-way comparison

Thin on purpose: Hydra's facts about the job become a plain JobContext, and retino.job owns the
lifecycle (validate, decide skip / resume / new, MLflow run, experiment, error policy).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from retino.config import register_configs
from retino.job import JobContext, run_job
from retino.reproduce import REPRODUCE_GROUP, REPRODUCES_ENV, original_run
from retino.signals import handle_stop_signals
from retino.sweep import parent_run_id, study_guard, swept_in

register_configs()


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
        # a study's reproduction names each job's original run (retino/reproduce.py)
        reproduces=original_run(hydra_cfg.runtime.choices.get(REPRODUCE_GROUP))
        or os.environ.get(REPRODUCES_ENV),
        jobs_at_once=jobs_at_once(hydra_cfg.launcher) if multirun else 1,
        swept=swept_in(sweep_dir) if multirun else ())


def jobs_at_once(launcher: DictConfig) -> int:
    """Jobs of this sweep running on this machine together: the joblib launcher's n_jobs
    (joblib reads n < 0 as cores + 1 + n), else one."""
    n_jobs = launcher.get("n_jobs")
    if not isinstance(n_jobs, int):
        return 1
    return n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)


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
