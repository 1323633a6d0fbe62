"""The store's earlier runs of a job's configuration, and what the job does about them: read
them with what their folders say, decide under one lock per configuration, retire the attempts
a new run replaces, or add a skipped run to this study."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from omegaconf import DictConfig

from retino.core.locks import lock_holder
from retino.core.names import (
    CHECKPOINT_FILE,
    CHECKPOINT_SET_ASIDE_TAG,
    CODE_VERSION_TAG,
    DATA_DIGEST_TAG,
    ERROR_TAG,
    FINISHED,
    JOB_LOCK_FILE,
    KILLED,
    OUTPUT_DIR_TAG,
    PARENT_TAG,
    RUNNING,
    SUPERSEDED_TAG,
)
from retino.jobs.context import JobContext
from retino.jobs.decision import Decision, EarlierRun, decide
from retino.jobs.plan import JobPlan
from retino.tracking.runs import end_run, set_run_tags
from retino.tracking.store import lock_folder
from retino.tracking.studies import previous_runs, study_member_tags
from retino.training.checkpoint import read_or_set_aside

log = logging.getLogger("retino")


def earlier_runs(experiment: str, job_hash: str) -> list[EarlierRun]:
    """The runs of this config_hash, newest first, with what their folders say: a checkpoint to
    continue from, and whether a live process still holds the run."""
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
    _, why = read_or_set_aside(path)
    if why:
        log.warning("%s: this job starts a new run.", why)
        set_run_tags(run_id, {CHECKPOINT_SET_ASIDE_TAG: why})
    return why is None


def decision_lock(experiment: str, job_hash: str) -> Path:
    """One lock per configuration: two jobs never decide about the same runs at once."""
    name = hashlib.sha256(experiment.encode()).hexdigest()[:8]
    return lock_folder() / f"{name}-{job_hash}.lock"


def decide_job(cfg: DictConfig, ctx: JobContext,
               plan: JobPlan) -> tuple[Decision, list[EarlierRun]]:
    """Skip, resume, new or busy, said with its reason; and the earlier runs it was decided on."""
    earlier = earlier_runs(cfg.experiment, plan.identity.config_hash)
    decision = decide(plan.identity, earlier, cfg.resume, ctx.multirun)
    log.info("%s: %s.", decision.action.capitalize(), decision.reason)
    return decision, earlier


def retire_replaced(earlier: list[EarlierRun], decision: Decision, new_run_id: str,
                    ctx: JobContext) -> None:
    """Earlier attempts that this new run replaces. One left RUNNING by a process that died
    (its job lock is free) ends KILLED; one of this same study (a requeued job preempted before
    its first checkpoint, say) is tagged superseded_by, so the study's report neither shows it
    nor counts it as a failed job. Runs of other studies keep their status in their reports."""
    for run in earlier:
        if run.status == FINISHED or run.alive or run is decision.run:
            continue
        if run.status == RUNNING and (Path(run.output_dir) / JOB_LOCK_FILE).is_file():
            set_run_tags(run.run_id, {ERROR_TAG: f"its process ended without ending the run "
                                               f"(found by run {new_run_id})"})
            end_run(run.run_id, KILLED)
        if ctx.parent_run_id and run.tags.get(PARENT_TAG) == ctx.parent_run_id:
            set_run_tags(run.run_id, {SUPERSEDED_TAG: new_run_id})


def skipped_run_score(decision: Decision, ctx: JobContext) -> float:
    """The finished run this job skips for: added to this study's report (it stays in its
    own), its selection score the job's."""
    if ctx.parent_run_id:
        set_run_tags(decision.run.run_id, study_member_tags(decision.run.tags, ctx.parent_run_id))
    return decision.run.objective
