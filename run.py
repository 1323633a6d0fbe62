"""retino's entry point: compose the config with Hydra, train and evaluate, log to MLflow.

    python run.py                                   # ResNet18 on the embedded demo data
    python run.py -m model=resnet18,resnet50 pretrained=true,false   # the four-way comparison
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from retino.config import config_hash, params_to_log, register_configs, run_name, validate_config
from retino.errors import RetinoError, user_message
from retino.sweep import parent_run_id

log = logging.getLogger("retino")
register_configs()


def check_config(cfg: DictConfig) -> None:
    """Every check that needs no data: values, choices, and the pretrained weights' variant."""
    from retino.models import MODEL_BUILDERS
    from retino.pretrained import PRETRAIN_SOURCES, imagenet_weights_url

    validate_config(cfg, MODEL_BUILDERS, PRETRAIN_SOURCES)
    if cfg.pretrained and cfg.pretrain.source == "imagenet" and not cfg.pretrain.weights:
        imagenet_weights_url(cfg.model.name, cfg.pretrain.variant)


def run_tags(cfg: DictConfig) -> dict[str, str]:
    """What MLflow records of this invocation, beside the params."""
    from retino.tracking import PARENT_TAG, git_commit

    hydra_cfg = HydraConfig.get()
    tags = {"hydra_overrides": " ".join(hydra_cfg.overrides.task) or "(none)",
            "git_commit": git_commit(), "output_dir": hydra_cfg.runtime.output_dir,
            "config_hash": config_hash(cfg)}
    if hydra_cfg.mode == RunMode.MULTIRUN and (parent := parent_run_id(hydra_cfg.sweep.dir)):
        tags[PARENT_TAG] = parent  # this job is a child of the study's run
    if os.environ.get("RETINO_REPRODUCES"):  # started by python -m retino.reproduce
        tags["reproduces"] = os.environ["RETINO_REPRODUCES"]
    return tags


def earlier_run(cfg: DictConfig, tags: dict[str, str]):
    """(run to skip, run to continue): a FINISHED run of this config skips a sweep job; the
    newest run, interrupted with a checkpoint on disk, is continued. resume=false: neither."""
    from retino.tracking import previous_runs

    runs = previous_runs(cfg.experiment, tags["config_hash"]) if cfg.resume else []
    in_sweep = HydraConfig.get().mode == RunMode.MULTIRUN
    finished = next((r for r in runs if r.status == "FINISHED"), None) if in_sweep else None
    latest = runs[0] if runs else None
    if latest and latest.status != "FINISHED" and (Path(latest.output_dir) / "last.pt").is_file():
        return finished, latest
    return finished, None


def job_gpu(cfg: DictConfig) -> AbstractContextManager[int | None]:
    """A GPU of its own for a sweep job on a machine with several (retino/devices.py); None when
    there is nothing to choose (CPU, one GPU, a SLURM job given its one GPU, a single run)."""
    from retino.devices import gpu_count, gpu_lease

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN or cfg.device == "cpu":
        return nullcontext(None)
    count = gpu_count()
    if count < 2:
        return nullcontext(None)
    return gpu_lease(Path(hydra_cfg.sweep.dir) / ".gpu-leases", hydra_cfg.job.num, count)


def tracked_experiment(cfg: DictConfig, config_error: RetinoError | None = None) -> float:
    """Run the experiment inside an MLflow run; returns the final test accuracy.

    With config_error, the run is only recorded as FAILED with that error (a bad sweep job)."""
    with job_gpu(cfg) as gpu:
        if gpu is not None:
            import torch

            torch.cuda.set_device(gpu)  # "cuda" now means this GPU, for the model and the data
            log.info("This job runs on GPU %d.", gpu)
        try:
            return _tracked_experiment(cfg, config_error, {} if gpu is None else {"gpu": str(gpu)})
        finally:
            if gpu is not None:  # this worker process may take the next job on another GPU:
                torch.cuda.empty_cache()  # hand this one back whole


def _tracked_experiment(cfg: DictConfig, config_error: RetinoError | None,
                        extra_tags: dict[str, str]) -> float:
    from retino.experiment import run_experiment  # heavy imports after validation
    from retino.tracking import PARENT_TAG, mlflow_run, set_run_tags

    tags = run_tags(cfg) | extra_tags
    done, interrupted = earlier_run(cfg, tags) if config_error is None else (None, None)
    if done is not None:
        log.info("Skipped: this configuration already FINISHED as MLflow run %s (resume=false "
                 "runs it again).", done.run_id)
        if PARENT_TAG in tags:  # it belongs to this study's report too
            set_run_tags(done.run_id, {PARENT_TAG: tags[PARENT_TAG]})
        return done.test_acc
    if interrupted is not None:
        tags["output_dir"] = interrupted.output_dir

    def pretraining_run(name: str, params: dict):  # CIFAR-10 pretraining: a run of its own
        return mlflow_run(cfg.experiment, name, params, {"purpose": "cifar10 pretraining",
                                                         "git_commit": tags["git_commit"]})

    with mlflow_run(cfg.experiment, run_name(cfg), params_to_log(cfg), tags,
                    resume_run_id=interrupted and interrupted.run_id,
                    system_metrics=cfg.log_system_metrics) as tracker:
        if config_error is not None:
            raise config_error
        result = run_experiment(cfg, Path(tags["output_dir"]), tracker,
                                run_factory=pretraining_run, resume=interrupted is not None)
    return result.history[-1]["test_acc"]


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (kill, a cluster's time limit) unwinds like Ctrl-C, so the run ends as KILLED."""
    raise SystemExit(128 + signum)


def handle_sigterm() -> None:
    """End the run as KILLED on SIGTERM, except under submitit, which ignores SIGTERM on purpose:
    SLURM's SIGUSR2 (before the time limit, or on preemption where the cluster sends it) makes
    submitit checkpoint and requeue the job, which then resumes from last.pt. A job killed there
    without it leaves its run RUNNING; running the sweep again continues it."""
    if os.environ.get("SUBMITIT_EXECUTOR") or threading.current_thread() is not \
            threading.main_thread():  # a thread-based launcher cannot take signals
        return
    signal.signal(signal.SIGTERM, _terminate)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    handle_sigterm()
    in_sweep = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        try:
            check_config(cfg)
        except RetinoError as err:
            if not in_sweep:
                raise
            return tracked_experiment(cfg, config_error=err)  # keep the bad job in MLflow
        return tracked_experiment(cfg)
    except RetinoError as err:
        log.error("%s", user_message(err))
        if not in_sweep:
            sys.exit(2)  # a user error: the message says it all, no traceback
    except Exception:
        if not in_sweep:
            raise
        log.exception("This job failed; the sweep goes on.")
    # A failed sweep job is FAILED in MLflow; the study's callback lists it and exits non-zero.
    return float("nan")


if __name__ == "__main__":
    main()
