"""One job's lifecycle, from a composed config and a plain job context (run.py builds it from
Hydra): validate → GPU lease → decide (skip / resume / new / busy, with the reason) → MLflow run
→ training → the MLflow model → error policy.

Nothing here reads HydraConfig, so the whole lifecycle runs in-process in tests.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from omegaconf import DictConfig

from retino.config.naming import run_name
from retino.config.params import params_to_log
from retino.config.validation import validate_config
from retino.core.errors import RetinoError, user_message
from retino.core.keys import GPU_PARAM
from retino.core.locks import JobLock, RunBusyError, exclusive, lock_holder
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
    CHECKPOINT_FILE,
    CHECKPOINT_SET_ASIDE_TAG,
    CODE_VERSION_TAG,
    CONFIG_HASH_TAG,
    CONFIG_NAME_TAG,
    DATA_DIGEST_TAG,
    ERROR_TAG,
    FINISHED,
    GIT_COMMIT_TAG,
    GIT_COMMITS_TAG,
    JOB_LOCK_FILE,
    KILLED,
    MODEL_DIR,
    OUTPUT_DIR_TAG,
    OVERRIDES_TAG,
    PAGE_FILE,
    PARENT_TAG,
    PRETRAINING,
    PURPOSE_TAG,
    REPRODUCES_TAG,
    RUNNING,
    SUPERSEDED_TAG,
)
from retino.data.load.digest import DataIdentity, data_identity
from retino.jobs.decision import BUSY, NEW, RESUME, SKIP, Decision, EarlierRun, JobIdentity, decide
from retino.jobs.identity import code_version, config_hash, git_commit
from retino.jobs.launchers import gpu_count, gpu_lease, on_gpu

if TYPE_CHECKING:
    from retino.training.cifar10 import RunFactory
    from retino.training.loop import FitResult
    from retino.training.tracker import Tracker

# torch and MLflow are imported inside the functions that need them (training, devices, the
# store): run.py imports this module, and `run.py --help` or a typo's error must not wait for
# them.

log = logging.getLogger("retino")


@dataclass(frozen=True)
class JobContext:
    """What a job needs to know about how it was started (Hydra's facts, as plain values)."""

    output_dir: Path
    overrides: tuple[str, ...] = ()
    multirun: bool = False
    sweep_dir: Path | None = None
    job_num: int = 0
    parent_run_id: str | None = None  # the study's MLflow run, in a multirun
    reproduces: str | None = None  # the run id this job re-runs (python -m retino.reproduce)
    jobs_at_once: int = 1  # jobs of the sweep running on this machine together (parallel)
    swept: tuple[str, ...] = ()  # the axes the study sweeps: the run's name shows their values


@dataclass(frozen=True)
class JobPlan:
    identity: JobIdentity
    data: DataIdentity
    git_commit: str
    execution: dict[str, str] = field(default_factory=dict)  # execution_params, once resolved


def check_config(cfg: DictConfig) -> None:
    """Every check that needs no data: values, choices, and the pretrained weights' variant."""
    from retino.models import timm_arch
    from retino.models.pretrained import imagenet_weights_url
    from retino.training.devices import resolve_device
    from retino.training.optimization import registered_choices

    validate_config(cfg, registered_choices())
    resolve_device(cfg.device)  # device=cuda without a usable GPU stops here
    torchvision = timm_arch(cfg.model.name, cfg.model.get("arch")) is None  # retino's ResNets
    if cfg.pretrained and cfg.pretrain.source == "imagenet" and not cfg.pretrain.weights \
            and torchvision:
        imagenet_weights_url(cfg.model.name, cfg.pretrain.variant)


def plan_job(cfg: DictConfig) -> JobPlan:
    """Validate the config, find the data (the demo set is generated on first use) and compute
    the job's identity: config, code and data."""
    from retino.data.load.loaders import locate_dataset

    check_config(cfg)
    data = data_identity(locate_dataset(cfg.data).root)
    return JobPlan(JobIdentity(config_hash(cfg), code_version(), data.digest), data, git_commit())


def with_execution(cfg: DictConfig, plan: JobPlan) -> JobPlan:
    """The plan with its resolved execution in the identity: a CPU run and a GPU run of one
    `auto` config are different runs, never skipped for each other. The GPU's model is logged
    but left out: a requeued job that lands on another model of GPU continues its run."""
    from retino.training.devices import execution_params

    execution = execution_params(cfg)
    resolved = {k: v for k, v in execution.items() if k != GPU_PARAM}
    identity = replace(plan.identity, config_hash=config_hash(cfg, resolved))
    return replace(plan, identity=identity, execution=execution)


def earlier_runs(experiment: str, job_hash: str) -> list[EarlierRun]:
    """The runs of this config_hash, newest first, with what their folders say: a checkpoint to
    continue from, and whether a live process still holds the run."""
    from retino.tracking.studies import previous_runs

    runs = []
    for stored in previous_runs(experiment, job_hash):
        folder = Path(stored.tags[OUTPUT_DIR_TAG]) if stored.tags.get(OUTPUT_DIR_TAG) else None
        live = lock_holder(folder) if folder and stored.status == RUNNING else None
        resumable = bool(folder and (folder / CHECKPOINT_FILE).is_file())
        if resumable and live is None and stored.status != FINISHED:
            resumable = _checkpoint_readable(stored.run_id, folder / CHECKPOINT_FILE)
        runs.append(EarlierRun(stored.run_id, stored.status, stored.tags.get(CODE_VERSION_TAG, ""),
                               stored.tags.get(DATA_DIGEST_TAG, ""), str(folder or ""),
                               resumable, live, stored.objective, stored.tags))
    return runs


def _checkpoint_readable(run_id: str, path: Path) -> bool:
    """Whether an interrupted run's last.pt can be resumed from. One that cannot (corrupt, or
    holding what weights_only refuses) is set aside as last.pt.corrupt and the old run tagged
    why: the job then starts a new MLflow run, instead of training anew inside the old one
    (whose epochs would be logged twice) or failing on the same file at every re-run."""
    from retino.tracking.runs import set_run_tags
    from retino.training.checkpoint import read_or_set_aside

    _, why = read_or_set_aside(path)
    if why:
        log.warning("%s: this job starts a new run.", why)
        set_run_tags(run_id, {CHECKPOINT_SET_ASIDE_TAG: why})
    return why is None


def decision_lock(experiment: str, job_hash: str) -> Path:
    """One lock per configuration: two jobs never decide about the same runs at once."""
    from retino.tracking.store import lock_folder

    name = hashlib.sha256(experiment.encode()).hexdigest()[:8]
    return lock_folder() / f"{name}-{job_hash}.lock"


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


def named(cfg: DictConfig) -> dict[str, str]:  # reports group a study's seeds by this name
    return {CONFIG_NAME_TAG: run_name(cfg)}


def invocation_tags(ctx: JobContext, commit: str) -> dict[str, str]:
    """What MLflow records of how a job was started: overrides, commit, folder, study."""
    tags = {OVERRIDES_TAG: " ".join(ctx.overrides) or "(none)", GIT_COMMIT_TAG: commit,
            OUTPUT_DIR_TAG: str(ctx.output_dir)}
    if ctx.parent_run_id:
        tags[PARENT_TAG] = ctx.parent_run_id  # this job is a child of the study's run
    return tags


def new_run_tags(ctx: JobContext, plan: JobPlan) -> dict[str, str]:
    """What MLflow records of a new run, beside the params: how it started and its identity."""
    tags = invocation_tags(ctx, plan.git_commit) | {
        GIT_COMMITS_TAG: plan.git_commit, CODE_VERSION_TAG: plan.identity.code_version,
        DATA_DIGEST_TAG: plan.identity.data_digest, CONFIG_HASH_TAG: plan.identity.config_hash}
    if ctx.reproduces:
        tags[REPRODUCES_TAG] = ctx.reproduces
    return tags


def resumed_run_tags(run: EarlierRun, ctx: JobContext, plan: JobPlan) -> dict[str, str]:
    """A continued run keeps its tags; it adds the commit it now trains under, and this study."""
    from retino.tracking.studies import study_member_tags

    commits = run.tags.get(GIT_COMMITS_TAG, run.tags.get(GIT_COMMIT_TAG, "")).split()
    tags = {GIT_COMMITS_TAG: " ".join(dict.fromkeys([*commits, plan.git_commit]))}
    if ctx.parent_run_id:
        tags |= study_member_tags(run.tags, ctx.parent_run_id)
    return tags


def _pretraining_runs(cfg: DictConfig, plan: JobPlan, ctx: JobContext) -> RunFactory:
    """Opens the tracked run of a CIFAR-10 pretraining, when the job needs one; in a study,
    nested under the study's run, so that its page shows the pretraining it caused."""
    from retino.tracking.runs import mlflow_run

    tags = {PURPOSE_TAG: PRETRAINING, GIT_COMMIT_TAG: plan.git_commit,
            CODE_VERSION_TAG: plan.identity.code_version}
    if ctx.parent_run_id:
        tags[PARENT_TAG] = ctx.parent_run_id

    def open_run(name: str, params: dict) -> AbstractContextManager:
        return mlflow_run(cfg.experiment, name, params, tags)
    return open_run


@contextmanager
def _claimed_run(cfg: DictConfig, ctx: JobContext, plan: JobPlan,
                 decision: Decision) -> Iterator[tuple[object, Path]]:
    """The job lock on the run's folder, then its MLflow run (new or continued)."""
    from retino.tracking.runs import mlflow_run

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


def _link_audit(tracker: Tracker, experiment: str, digest: str) -> None:
    """The run names the audit of its data (python -m retino.audit), when one was logged."""
    from retino.tracking.audits import audit_run_for

    if audit := audit_run_for(experiment, digest):
        tracker.set_tags({AUDIT_RUN_TAG: audit})


def _decide(cfg: DictConfig, ctx: JobContext,
            plan: JobPlan) -> tuple[Decision, list[EarlierRun]]:
    earlier = earlier_runs(cfg.experiment, plan.identity.config_hash)
    decision = decide(plan.identity, earlier, cfg.resume, ctx.multirun)
    log.info("%s: %s.", decision.action.capitalize(), decision.reason)
    return decision, earlier


def _retire(earlier: list[EarlierRun], decision: Decision, new_run_id: str,
            ctx: JobContext) -> None:
    """Earlier attempts that this new run replaces. One left RUNNING by a process that died
    (its job lock is free) ends KILLED; one of this same study (a requeued job preempted before
    its first checkpoint, say) is tagged superseded_by, so the study's report neither shows it
    nor counts it as a failed job. Runs of other studies keep their status in their reports."""
    from retino.tracking.runs import end_run, set_run_tags

    for run in earlier:
        if run.status == FINISHED or run.alive or run is decision.run:
            continue
        if run.status == RUNNING and (Path(run.output_dir) / JOB_LOCK_FILE).is_file():
            set_run_tags(run.run_id, {ERROR_TAG: f"its process ended without ending the run "
                                               f"(found by run {new_run_id})"})
            end_run(run.run_id, KILLED)
        if ctx.parent_run_id and run.tags.get(PARENT_TAG) == ctx.parent_run_id:
            set_run_tags(run.run_id, {SUPERSEDED_TAG: new_run_id})


def _skip(decision: Decision, ctx: JobContext) -> float:
    from retino.tracking.runs import set_run_tags
    from retino.tracking.studies import study_member_tags

    if ctx.parent_run_id:  # it belongs to this study's report too, and stays in its own
        set_run_tags(decision.run.run_id, study_member_tags(decision.run.tags, ctx.parent_run_id))
    return decision.run.objective


def tracked_job(cfg: DictConfig, ctx: JobContext, plan: JobPlan) -> float:
    """Decide under the configuration's lock, claim the run, train, log its MLflow model; its
    selection score."""
    from retino.training.pipeline import train_and_evaluate

    with ExitStack() as stack:
        with exclusive(decision_lock(cfg.experiment, plan.identity.config_hash)):
            decision, earlier = _decide(cfg, ctx, plan)
            if decision.action == BUSY:
                raise RunBusyError(f"Not started: {decision.reason}")
            if decision.action == SKIP:
                return _skip(decision, ctx)
            tracker, out_dir = stack.enter_context(_claimed_run(cfg, ctx, plan, decision))
            tracker.announce_end = False  # said below, after the result
            if decision.action == NEW:
                _retire(earlier, decision, tracker.run_id, ctx)
        result = train_and_evaluate(cfg, out_dir, tracker,
                                    run_factory=_pretraining_runs(cfg, plan, ctx),
                                    resume=decision.action == RESUME,
                                    jobs_at_once=ctx.jobs_at_once)
        if cfg.log_model:  # beside model_state.pt, the MLflow way: grades raw photographs
            log_grader(tracker, out_dir, result, cfg)
    _say_result(cfg, ctx, result, out_dir, tracker.page())
    return result.selected[SELECTION_SCORE]


def _say_result(cfg: DictConfig, ctx: JobContext, result: FitResult, out_dir: Path,
                page: str) -> None:
    """The job's last lines: its result under the report's names, where its report is, and
    where mlflow ui shows it."""
    from retino.training.pipeline import headline_markdown

    log.info("Result of %s:\n%s\nReport: %s\nIn mlflow ui: %s", run_name(cfg, ctx.swept),
             headline_markdown(cfg, result).replace("`", ""), out_dir / PAGE_FILE, page)




def log_grader(tracker: Tracker, out_dir: Path, result: FitResult, cfg: DictConfig) -> None:
    """The finished run packaged as an MLflow model (retino/serving/pyfunc.py) and logged as the
    run's MLflow 3 model, loaded as runs:/<id>/model: the job does this after training, so
    tracking never imports serving."""
    from retino.serving.pyfunc import save_grader

    chosen = result.selected
    # the run's test numbers linked to its logged model: MLflow's Models view shows them
    shown = (selected(TEST_ACC), selected(TEST_QWK), screening_key("auc"))
    tracker.log_model(save_grader(out_dir, result.example_image), MODEL_DIR,
                      {key: chosen[key] for key in shown if key in chosen},
                      int(chosen[SELECTED_EPOCH]), {"run_name": run_name(cfg)})


def _record_failed_job(cfg: DictConfig, ctx: JobContext, err: RetinoError) -> NoReturn:
    """A sweep job that cannot start is kept in MLflow as FAILED with its error. It carries no
    config_hash, so it never stands in the way of resuming a real run of that config."""
    from retino.tracking.runs import mlflow_run

    tags = invocation_tags(ctx, git_commit()) | named(cfg)
    with mlflow_run(cfg.experiment, run_name(cfg, ctx.swept), params_to_log(cfg), tags):
        raise err


def _planned_and_tracked(cfg: DictConfig, ctx: JobContext) -> float:
    try:
        plan = plan_job(cfg)
    except RetinoError as err:
        if not ctx.multirun:
            raise
        _record_failed_job(cfg, ctx, err)  # keeps the bad job in MLflow, then raises
    with job_gpu(cfg, ctx) as gpu, on_gpu(gpu):
        try:
            return tracked_job(cfg, ctx, with_execution(cfg, plan))
        except RunBusyError as err:
            if not ctx.multirun:
                raise
            _record_failed_job(cfg, ctx, err)


def run_job(cfg: DictConfig, ctx: JobContext) -> float:
    """The whole lifecycle with its error policy: a single run's user error exits with status 2
    and the message alone; a sweep job's error is recorded and the sweep goes on (the study's
    callback lists the failed jobs and exits non-zero). Returns what a sweeper optimises: the
    selection score (the best validation metric; the final test accuracy without a validation
    split), nan for a failed job."""
    try:
        return _planned_and_tracked(cfg, ctx)
    except RetinoError as err:
        log.error("%s", user_message(err))
        if not ctx.multirun:
            raise SystemExit(2) from None  # a user error: the message says it all
    except Exception:
        if not ctx.multirun:
            raise
        log.exception("This job failed; the sweep goes on.")
    return float("nan")
