"""The MLflow store under parallel jobs: a new SQLite file used by 4 processes at once, and
retries while another process holds the database lock."""

import multiprocessing
import os

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from retino.tracking.runs import mlflow_run
from retino.tracking.store import call_with_lock_retries
from tests.helpers.processes import exit_codes


def job(number: int, uri: str) -> None:
    """One job's whole conversation with the store: experiment, run, params, 20 epochs of
    metrics."""
    os.environ["MLFLOW_TRACKING_URI"] = uri
    with mlflow_run("parallel", f"job{number}", {f"p{i}": i for i in range(60)}, {}) as run:
        for epoch in range(1, 21):
            run.log_metrics({"train_acc": epoch / 20, "test_acc": epoch / 40}, step=epoch)


def test_four_jobs_starting_at_once_on_a_new_sqlite_store_lose_nothing(tmp_path):
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"  # not created yet: the jobs create it
    # forked: four processes, each with its own connections and locks, without the 4 s of
    # imports a new interpreter would pay first (they start closer together: a harder race)
    context = multiprocessing.get_context("fork")
    assert exit_codes(context, job, [(n, uri) for n in range(4)]) == [0, 0, 0, 0]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("parallel").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["job0", "job1", "job2", "job3"]
    for run in runs:
        assert run.info.status == "FINISHED" and len(run.data.params) == 60
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "test_acc")]
        assert sorted(steps) == list(range(1, 21))


def test_a_locked_database_is_retried_and_other_errors_are_not():
    attempts = []

    def log_while_locked_twice():
        attempts.append(1)
        if len(attempts) <= 2:
            raise MlflowException("(sqlite3.OperationalError) database is locked")
        return "logged"

    assert call_with_lock_retries(log_while_locked_twice, pauses_s=(0, 0, 0)) == "logged"
    assert len(attempts) == 3
    with pytest.raises(MlflowException, match="locked"):  # still locked after every pause
        call_with_lock_retries(_always_locked, pauses_s=(0, 0))
    calls = []
    with pytest.raises(ValueError):  # any other error is not retried
        call_with_lock_retries(lambda: calls.append(1) or int("x"), pauses_s=(0, 0))
    assert calls == [1]


def _always_locked():
    raise MlflowException("database is locked")
