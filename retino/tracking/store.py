"""The MLflow store that every run, job and report talks to, made safe for many processes at once.

Default: `sqlite:///<project root>/mlflow.db` with artifacts in `<project root>/mlruns/`, so
`mlflow ui` started in the project root shows every run; `MLFLOW_TRACKING_URI` wins when set (a
shared `mlflow server` for a team or a cluster: `http://host:5000`).

Two hazards of a SQLite file shared by parallel jobs, and what is done about them:
- The first use of a new file creates its tables (MLflow's migrations). Two processes doing that at
  once corrupt each other's migration, so the first use happens under a file lock beside the DB.
- A writer waits at most 20 s (MLflow's busy timeout) for another's lock, then fails with
  "database is locked"; every client call is retried then, with a growing pause, before giving up.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from retino import PROJECT_ROOT
from retino.core.names import LOCK_DIR_ENV

log = logging.getLogger(__name__)

LOCK_RETRY_PAUSES_S = (1, 2, 4, 8, 15, 30)  # after the 20 s busy wait of each attempt


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI; None for a server or another database."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///"))
    return None


def artifact_location(tracking_uri: str) -> str | None:
    """For a SQLite store, artifacts go to `mlruns/` beside the database file (absolute)."""
    db_path = sqlite_path(tracking_uri)
    if db_path is not None:
        return (db_path.parent / "mlruns").resolve().as_uri()
    return None  # a server or another store decides for itself


UI_DEFAULT = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default
# MLflow's own kind for a model-training experiment. In mlflow ui 3.17 it does not choose the
# view by itself (a new browser opens every experiment in the GenAI view: seen in headless
# Chromium); the ?workflowType=machine_learning in the addresses below does.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
MODEL_TRAINING_VIEW = "?workflowType=machine_learning"


def run_page(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """Where mlflow ui shows a run (in its model-training view), and how to start it for a
    local store."""
    page = f"{_ui_server(tracking_uri)}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"{page}{MODEL_TRAINING_VIEW}{_start_hint(tracking_uri)}"


def ui_pages(tracking_uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """Where mlflow ui shows a run and the experiment's runs table (or the table alone), in
    its model-training view, and how to start it for a local store."""
    table = f"{_ui_server(tracking_uri)}/#/experiments/{experiment_id}/runs{MODEL_TRAINING_VIEW}"
    if run_id is None:
        return f"{table}{_start_hint(tracking_uri)}"
    return f"{run_page(tracking_uri, experiment_id, run_id)}; all runs: {table}"


def _ui_server(tracking_uri: str) -> str:
    return tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) \
        else UI_DEFAULT


def _start_hint(tracking_uri: str) -> str:
    db_path = sqlite_path(tracking_uri)
    return f" (start `mlflow ui` in {db_path.parent})" if db_path else ""


def is_lock_error(err: BaseException) -> bool:
    return "database is locked" in str(err)


def call_with_lock_retries(call: Callable, *args: Any,
                           pauses_s: tuple[float, ...] = LOCK_RETRY_PAUSES_S, **kwargs: Any) -> Any:
    """call(*args, **kwargs), retried while SQLite says another process holds its lock.

    A failed write is rolled back whole by MLflow's session, so a retry never writes twice."""
    for pause in (*pauses_s, None):
        try:
            return call(*args, **kwargs)
        except Exception as err:
            if pause is None or not is_lock_error(err):
                raise
            log.warning("The MLflow database is locked by another job; retrying in %ss.", pause)
            time.sleep(pause)


class RetryingClient:
    """An MlflowClient whose every method retries on "database is locked"."""

    def __init__(self, client: MlflowClient) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        return functools.partial(call_with_lock_retries, attr) if callable(attr) else attr


def _create_tables_once(tracking_uri: str) -> None:
    """Let MLflow create or migrate a SQLite store's tables under an exclusive file lock."""
    db_path = sqlite_path(tracking_uri)
    if db_path is None:
        return
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with open(db_path.parent / f"{db_path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # waits while another process creates the tables
        try:
            MlflowClient(tracking_uri).search_experiments(max_results=1)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@functools.lru_cache(maxsize=8)
def _ready_store(tracking_uri: str) -> None:
    _create_tables_once(tracking_uri)


def mlflow_client(tracking_uri: str | None = None) -> RetryingClient:
    """A client of the store (default_tracking_uri() when None), its tables ready."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # logs, not bars
    tracking_uri = tracking_uri or default_tracking_uri()
    _ready_store(tracking_uri)
    return RetryingClient(MlflowClient(tracking_uri))


def lock_folder(tracking_uri: str | None = None) -> Path:
    """Where jobs that share this store take their locks: RETINO_LOCK_DIR when set (a folder on
    a file system all the jobs' machines share); else beside a SQLite file; for a server, in the
    project (jobs on one machine; see retino/core/locks.py)."""
    if os.environ.get(LOCK_DIR_ENV):
        return Path(os.environ[LOCK_DIR_ENV])
    db_path = sqlite_path(tracking_uri or default_tracking_uri())
    return (db_path.parent if db_path else PROJECT_ROOT) / ".retino-locks"
