"""A planned job run under MLflow, behind the lifecycle's boundary (retino/jobs/lifecycle.py):
decided under the configuration's lock, its run claimed (new or continued), trained, its MLflow
model logged and its result said; a sweep job that cannot start is kept as a FAILED run."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from omegaconf import DictConfig

from retino.config.naming import run_name
from retino.config.params import params_to_log
from retino.core.errors import RetinoError
from retino.core.locks import JobLock, RunBusyError, exclusive
from retino.core.metric_names import (
    SELECTED_EPOCH,
    SELECTION_SCORE,
    TEST_ACC,
    TEST_QWK,
    screening_key,
    selected,
)
from retino.core.names import (
    AUDIT_RUN_TAG,
    CODE_VERSION_TAG,
    GIT_COMMIT_TAG,
    GIT_COMMITS_TAG,
    MODEL_DIR,
    PAGE_FILE,
    PARENT_TAG,
    PRETRAINING,
    PURPOSE_TAG,
)
from retino.jobs import identity
from retino.jobs.context import JobContext
from retino.jobs.decision import BUSY, NEW, RESUME, SKIP, Decision, EarlierRun
from retino.jobs.launchers import gpu_count, gpu_lease, on_gpu
from retino.jobs.plan import JobPlan, invocation_tags, named, new_run_tags, with_execution
from retino.jobs.reconcile import decide_job, decision_lock, retire_replaced, skipped_run_score
from retino.serving.pyfunc import save_grader
from retino.tracking.audits import audit_run_for
from retino.tracking.runs import mlflow_run
from retino.tracking.studies import study_member_tags
from retino.training.pipeline import headline_markdown, train_and_evaluate

if TYPE_CHECKING:
    from retino.training.cifar10 import RunFactory
    from retino.training.loop import FitResult
    from retino.training.tracker import Tracker

log = logging.getLogger("retino")


def run_planned(cfg: DictConfig, ctx: JobContext, plan: JobPlan) -> float:
    """Lease a GPU and run the planned job tracked; its selection score. A sweep job that finds
    its run busy is recorded FAILED before the error goes on to the lifecycle's policy."""
    with job_gpu(cfg, ctx) as gpu, on_gpu(gpu):
        try:
            return tracked_job(cfg, ctx, with_execution(cfg, plan))
        except RunBusyError as err:
            if not ctx.multirun:
                raise
            record_failed_job(cfg, ctx, err)


def job_gpu(cfg: DictConfig, ctx: JobContext) -> AbstractContextManager[int | None]:
    """A GPU of its own for a sweep job on a machine with several (retino/jobs/launchers.py);
    None when there is nothing to choose (CPU, one GPU, a SLURM job given its one GPU, a single
    run)."""
    if not ctx.multirun or cfg.device == "cpu" or ctx.sweep_dir is None:
        return nullcontext(None)
    count = gpu_count()
    if count < 2:
        return nullcontext(None)
    return gpu_lease(Path(ctx.sweep_dir) / ".gpu-leases", ctx.job_num, count)


def tracked_job(cfg: DictConfig, ctx: JobContext, plan: JobPlan) -> float:
    """Decide under the configuration's lock, claim the run, train, log its MLflow model; its
    selection score."""
    with ExitStack() as stack:
        with exclusive(decision_lock(cfg.experiment, plan.identity.config_hash)):
            decision, earlier = decide_job(cfg, ctx, plan)
            if decision.action == BUSY:
                raise RunBusyError(f"Not started: {decision.reason}")
            if decision.action == SKIP:
                return skipped_run_score(decision, ctx)
            tracker, out_dir = stack.enter_context(_claimed_run(cfg, ctx, plan, decision))
            tracker.announce_end = False  # said below, after the result
            if decision.action == NEW:
                retire_replaced(earlier, decision, tracker.run_id, ctx)
        result = train_and_evaluate(cfg, out_dir, tracker,
                                    run_factory=_pretraining_runs(cfg, plan, ctx),
                                    resume=decision.action == RESUME,
                                    jobs_at_once=ctx.jobs_at_once)
        if cfg.log_model:  # beside model_state.pt, the MLflow way: grades raw photographs
            log_grader(tracker, out_dir, result, cfg)
    _say_result(cfg, ctx, result, out_dir, tracker.page())
    return result.selected[SELECTION_SCORE]


@contextmanager
def _claimed_run(cfg: DictConfig, ctx: JobContext, plan: JobPlan,
                 decision: Decision) -> Iterator[tuple[Tracker, Path]]:
    """The job lock on the run's folder, then its MLflow run (new or continued)."""
    resumed = decision.run if decision.action == RESUME else None
    out_dir = Path(resumed.output_dir) if resumed else Path(ctx.output_dir)
    with JobLock(out_dir) as lock:
        tags = resumed_run_tags(resumed, ctx, plan) if resumed else new_run_tags(ctx, plan)
        with mlflow_run(cfg.experiment, run_name(cfg, ctx.swept),
                        params_to_log(cfg) | plan.execution, tags | named(cfg),
                        resume_run_id=resumed and resumed.run_id,
                        system_metrics=cfg.log_system_metrics) as tracker:
            lock.record(tracker.run_id)
            if resumed is None:
                tracker.log_dataset(plan.data)
            _link_audit(tracker, cfg.experiment, plan.identity.data_digest)
            yield tracker, out_dir


def resumed_run_tags(run: EarlierRun, ctx: JobContext, plan: JobPlan) -> dict[str, str]:
    """A continued run keeps its tags; it adds the commit it now trains under, and this study."""
    commits = run.tags.get(GIT_COMMITS_TAG, run.tags.get(GIT_COMMIT_TAG, "")).split()
    tags = {GIT_COMMITS_TAG: " ".join(dict.fromkeys([*commits, plan.git_commit]))}
    if ctx.parent_run_id:
        tags |= study_member_tags(run.tags, ctx.parent_run_id)
    return tags


def _link_audit(tracker: Tracker, experiment: str, digest: str) -> None:
    """The run names the audit of its data (python -m retino.audit), when one was logged."""
    if audit := audit_run_for(experiment, digest):
        tracker.set_tags({AUDIT_RUN_TAG: audit})


def _pretraining_runs(cfg: DictConfig, plan: JobPlan, ctx: JobContext) -> RunFactory:
    """Opens the tracked run of a CIFAR-10 pretraining, when the job needs one; in a study,
    nested under the study's run, so that its page shows the pretraining it caused."""
    tags = {PURPOSE_TAG: PRETRAINING, GIT_COMMIT_TAG: plan.git_commit,
            CODE_VERSION_TAG: plan.identity.code_version}
    if ctx.parent_run_id:
        tags[PARENT_TAG] = ctx.parent_run_id

    def open_run(name: str, params: dict) -> AbstractContextManager:
        return mlflow_run(cfg.experiment, name, params, tags)
    return open_run


def _say_result(cfg: DictConfig, ctx: JobContext, result: FitResult, out_dir: Path,
                page: str) -> None:
    """The job's last lines: its result under the report's names, where its report is, and
    where mlflow ui shows it."""
    log.info("Result of %s:\n%s\nReport: %s\nIn mlflow ui: %s", run_name(cfg, ctx.swept),
             headline_markdown(cfg, result).replace("`", ""), out_dir / PAGE_FILE, page)


def log_grader(tracker: Tracker, out_dir: Path, result: FitResult, cfg: DictConfig) -> None:
    """The finished run packaged as an MLflow model (retino/serving/pyfunc.py) and logged as the
    run's MLflow 3 model, loaded as runs:/<id>/model: the job does this after training, so
    tracking never imports serving."""
    chosen = result.selected
    # the run's test numbers linked to its logged model: MLflow's Models view shows them
    shown = (selected(TEST_ACC), selected(TEST_QWK), screening_key("auc"))
    tracker.log_model(save_grader(out_dir, result.example_image), MODEL_DIR,
                      {key: chosen[key] for key in shown if key in chosen},
                      int(chosen[SELECTED_EPOCH]), {"run_name": run_name(cfg)})


def record_failed_job(cfg: DictConfig, ctx: JobContext, err: RetinoError) -> NoReturn:
    """A sweep job that cannot start is kept in MLflow as FAILED with its error. It carries no
    config_hash, so it never stands in the way of resuming a real run of that config."""
    tags = invocation_tags(ctx, identity.git_commit()) | named(cfg)
    with mlflow_run(cfg.experiment, run_name(cfg, ctx.swept), params_to_log(cfg), tags):
        raise err
