"""One job's lifecycle, from a composed config and a plain job context (run.py builds it from
Hydra): validate → GPU lease → decide (skip / resume / new / busy, with the reason) → MLflow run
→ training → the MLflow model → error policy.

Cut by concept: what a job is before it runs (plan.py: checks, identity, tags), the store's earlier
runs of its configuration (reconcile.py), the job run under MLflow (tracked.py), and here the error
policy and the boundary behind which torch and MLflow are imported. Nothing here reads HydraConfig,
so the whole lifecycle runs in-process in tests.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from retino.core.errors import RetinoError, user_message
from retino.jobs.context import JobContext

__all__ = ["JobContext", "run_job"]  # what run.py and the tests drive a job with

log = logging.getLogger("retino")


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


def _planned_and_tracked(cfg: DictConfig, ctx: JobContext) -> float:
    """Plan, then run tracked. A sweep job whose plan fails is recorded FAILED (tracked.py)
    before its error goes on to run_job's policy."""
    # The boundary: the training stack comes in here, not when run.py imports this module, so
    # that `run.py --help` and a typo's error never wait for it; and in two steps, torch for the
    # plan's checks, then MLflow for the tracked run, so that a bad value never waits for MLflow.
    from retino.jobs.plan import plan_job

    try:
        plan = plan_job(cfg)
    except RetinoError as err:
        if not ctx.multirun:
            raise
        from retino.jobs.tracked import record_failed_job

        record_failed_job(cfg, ctx, err)  # keeps the bad job in MLflow, then raises
    from retino.jobs.tracked import run_planned

    return run_planned(cfg, ctx, plan)
