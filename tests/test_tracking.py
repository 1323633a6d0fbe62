import time

import pytest
from mlflow.tracking import MlflowClient

from retino import PROJECT_ROOT
from retino.errors import DataError, user_message
from retino.store import default_tracking_uri
from retino.tracking import mlflow_run


def test_default_store_is_sqlite_in_project_root_with_artifacts_beside_it(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert default_tracking_uri() == f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"
    monkeypatch.setattr("retino.store.PROJECT_ROOT", tmp_path)  # do not touch the real store
    with mlflow_run("exp", "a-run", {"model.name": "resnet18"}, {}) as tracker:
        tracker.log_metrics({"test_acc": 0.5}, step=1)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("exp")
    assert experiment.artifact_location == (tmp_path / "mlruns").as_uri()


def test_run_ends_finished_failed_or_killed_never_running():
    with mlflow_run("exp", "ok", {"lr": 0.1}, {"k": "v"}) as tracker:
        tracker.log_metrics({"test_acc": 0.75}, step=1)
    with pytest.raises(DataError):
        with mlflow_run("exp", "bad", {}, {}):
            raise DataError("Cannot decode image x.jpeg")
    with pytest.raises(KeyboardInterrupt):
        with mlflow_run("exp", "stopped", {}, {}):
            raise KeyboardInterrupt
    client = MlflowClient()
    runs = {r.info.run_name: r for r in client.search_runs(
        [client.get_experiment_by_name("exp").experiment_id])}
    assert runs["ok"].info.status == "FINISHED" and runs["ok"].data.params == {"lr": "0.1"}
    assert runs["ok"].data.metrics == {"test_acc": 0.75}
    assert runs["bad"].info.status == "FAILED"
    assert runs["bad"].data.tags["error"] == "DataError: Cannot decode image x.jpeg"
    assert runs["stopped"].info.status == "KILLED"


def test_worker_error_is_reduced_to_its_original_message():
    wrapped = DataError("Caught DataError in DataLoader worker process 0.\n"
                        "Original Traceback (most recent call last):\n  File \"x.py\"\n"
                        "retino.errors.DataError: Cannot decode image /d/a.jpeg: corrupt\n")
    assert user_message(wrapped) == "Cannot decode image /d/a.jpeg: corrupt"
    assert user_message(DataError("plain")) == "plain"


def test_system_metrics_are_sampled_into_the_run_when_asked(monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    with mlflow_run("exp", "watched", {}, {}, system_metrics=True) as tracker:
        started = time.monotonic()
        while time.monotonic() - started < 1.5:  # a few samples' worth of work
            sum(i * i for i in range(10_000))
    metrics = MlflowClient().get_run(tracker.run_id).data.metrics
    assert "system/cpu_utilization_percentage" in metrics
    assert "system/system_memory_usage_megabytes" in metrics
    with mlflow_run("exp", "unwatched", {}, {}) as tracker:
        pass
    assert MlflowClient().get_run(tracker.run_id).data.metrics == {}
