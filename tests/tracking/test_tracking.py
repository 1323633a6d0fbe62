import time

import pytest
from mlflow.tracking import MlflowClient

from retino import PROJECT_ROOT
from retino.core.errors import DataError, user_message
from retino.tracking.runs import mlflow_run
from retino.tracking.store import default_tracking_uri


def test_default_store_is_sqlite_in_project_root_with_artifacts_beside_it(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert default_tracking_uri() == f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"
    # do not touch the real store
    monkeypatch.setattr("retino.tracking.store.PROJECT_ROOT", tmp_path)
    with mlflow_run("exp", "a-run", {"model.name": "resnet18"}, {}) as tracker:
        tracker.log_metrics({"test_acc": 0.5}, step=1)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("exp")
    assert experiment.artifact_location == (tmp_path / "mlruns").as_uri()
    # mlflow ui opens it in its model-training view (runs table), not the GenAI one (traces).
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_run_ends_by_saying_where_mlflow_ui_shows_it(caplog):
    import logging

    with caplog.at_level(logging.INFO), mlflow_run("exp", "a-run", {}, {}) as tracker:
        pass
    experiment = MlflowClient().get_experiment_by_name("exp").experiment_id
    assert (f"http://127.0.0.1:5000/#/experiments/{experiment}/runs/{tracker.run_id}"
            "?workflowType=machine_learning" in caplog.text)
    assert f"/#/experiments/{experiment}/runs?workflowType=machine_learning" in caplog.text
    assert "start `mlflow ui` in" in caplog.text  # a local store: from its folder


def test_ui_pages_of_a_tracking_server_are_on_that_server():
    from retino.tracking.store import ui_pages

    text = ui_pages("http://mlflow.lab:5000/", "7", "abc")
    assert text == ("http://mlflow.lab:5000/#/experiments/7/runs/abc"
                    "?workflowType=machine_learning; all runs: "
                    "http://mlflow.lab:5000/#/experiments/7/runs?workflowType=machine_learning")


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


def test_a_run_that_recovers_keeps_no_error_of_its_failed_attempt():
    """A FAILED run resumed to FINISHED kept its `error` tag and error.txt."""
    with pytest.raises(DataError):
        with mlflow_run("exp", "flaky", {}, {}) as tracker:
            raise DataError("the disk went away")
    run_id = tracker.run_id
    client = MlflowClient()
    assert "error.txt" in {item.path for item in client.list_artifacts(run_id)}
    with mlflow_run("exp", "flaky", {}, {}, resume_run_id=run_id):
        pass
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and "error" not in run.data.tags
    assert "error.txt" not in {item.path for item in client.list_artifacts(run_id)}


def test_a_run_that_cannot_clear_its_old_error_still_ends_finished(monkeypatch):
    """Clearing failed (the server away, a store that cannot delete): the trained run was left
    RUNNING."""
    with pytest.raises(DataError):
        with mlflow_run("exp", "stubborn", {}, {}) as tracker:
            raise DataError("once")
    client = MlflowClient()

    def cannot(*args, **kwargs):
        raise NotImplementedError("this store deletes nothing")
    monkeypatch.setattr("retino.tracking.runs.get_artifact_repository",
                        lambda uri: type("Repo", (), {"delete_artifacts": cannot})())
    with mlflow_run("exp", "stubborn", {}, {}, resume_run_id=tracker.run_id):
        pass
    assert client.get_run(tracker.run_id).info.status == "FINISHED"


def test_only_a_server_that_does_not_answer_is_waited_for():
    """A refused request (a wrong password, 401) or a missing file was taken for an outage:
    the metrics waited and the run's end was retried for half an hour."""
    from mlflow.exceptions import MlflowException

    from retino.tracking.runs import unreachable

    assert unreachable(MlflowException("API request to http://h/api failed with exception "
                                       "HTTPConnectionPool(...): Max retries exceeded"))
    assert unreachable(MlflowException("API request to endpoint /api failed with error code "
                                       "503 != 200. Response body: ''"))
    assert unreachable(ConnectionRefusedError())
    assert not unreachable(MlflowException("API request to endpoint /api failed with error "
                                           "code 401 != 200. Response body: 'unauthorized'"))
    assert not unreachable(FileNotFoundError("model_state.pt"))
    assert not unreachable(MlflowException("INVALID_PARAMETER_VALUE: bad metric"))


def test_a_failing_run_ends_at_once_and_raises_its_own_error_when_the_server_is_away(
        monkeypatch):
    """Its error tag, traceback and end each waited up to 15 minutes for an absent server,
    and the tracking error replaced the run's own."""
    import time

    from retino.tracking import runs

    with pytest.raises(DataError, match="the real cause"):
        with mlflow_run("exp", "doomed", {}, {}) as tracker:
            def away(*args, **kwargs):
                raise ConnectionRefusedError("the server is away")
            monkeypatch.setattr(tracker.client, "set_tag", away)
            monkeypatch.setattr(tracker.client, "set_terminated", away)
            monkeypatch.setenv(runs.PATIENCE_ENV, "600")
            started = time.monotonic()
            raise DataError("the real cause")
    assert time.monotonic() - started < 5


def test_lock_files_are_group_writable_whatever_the_umask(tmp_path):
    """At 0644 a second user of a shared RETINO_LOCK_DIR got PermissionError."""
    import os
    import stat

    from retino.core.locks import exclusive, try_lock

    old = os.umask(0o022)
    try:
        with exclusive(tmp_path / "decide.lock"):
            pass
        try_lock(tmp_path / "job.lock").close()
    finally:
        os.umask(old)
    for name in ("decide.lock", "job.lock"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o664, name


def test_worker_error_is_reduced_to_its_original_message():
    wrapped = DataError("Caught DataError in DataLoader worker process 0.\n"
                        "Original Traceback (most recent call last):\n  File \"x.py\"\n"
                        "retino.core.errors.DataError: Cannot decode image /d/a.jpeg: corrupt\n")
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


def test_a_dataset_another_job_logged_at_the_same_moment_is_linked_not_an_error(tmp_path):
    """Parallel jobs on one dataset (seen with four jobs on a tracking server): the store looks
    the dataset up, another job inserts it, the insert fails on its unique key. It exists then:
    the second attempt links it."""
    from mlflow.exceptions import MlflowException

    from retino.data.load.digest import DataIdentity
    from retino.tracking.runs import MlflowTracker

    tracker = MlflowTracker("exp")
    tracker.start("job", {})
    real, calls = tracker.client.log_inputs, []

    def racing(run_id, datasets):
        calls.append(run_id)
        if len(calls) == 1:
            real(run_id, datasets=datasets)  # the other job's insert, in effect
            raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: "
                                  "datasets.experiment_id, datasets.name, datasets.digest")
        return real(run_id, datasets=datasets)

    tracker.client.log_inputs = racing
    tracker.log_dataset(DataIdentity("abc123", tmp_path, {"train": 2, "test": 1}, {}))
    run = MlflowClient().get_run(tracker.run_id)
    assert len(calls) == 2 and run.inputs.dataset_inputs[0].dataset.digest == "abc123"


@pytest.mark.slow(seconds=17)
def test_a_run_outlives_its_tracking_server_going_away(tmp_path, monkeypatch, caplog):
    """The server is killed after epoch 1 and back after epoch 2: training never stops (a
    call used to retry for 4 minutes, and the job ended FAILED), and the run finishes with
    every epoch logged once."""
    import os
    import subprocess
    import sys

    from tests.helpers.cli import api, free_port, server_env

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port",
               str(port), "--workers", "1", "--backend-store-uri",
               f"sqlite:///{tmp_path / 'mlflow.db'}", "--artifacts-destination",
               str(tmp_path / "artifacts")]
    env = server_env()

    def serve():
        server = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        api(url, "/health")  # waits until it answers
        return server

    def stop(server):
        os.killpg(server.pid, 9)
        server.wait(timeout=30)

    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("RETINO_TRACKING_PATIENCE_S", "120")
    server = serve()
    try:
        with mlflow_run("exp", "outage", {"lr": 0.1}, {}) as tracker:
            tracker.log_metrics({"test_acc": 0.5}, step=1)
            stop(server)
            tracker.log_metrics({"test_acc": 0.6}, step=2)  # the server is away: it waits
            assert tracker.pending and "does not answer" in caplog.text
            server = serve()
            tracker.log_metrics({"test_acc": 0.7}, step=3)
        run_id = tracker.run_id
        client = MlflowClient(url)
        history = client.get_metric_history(run_id, "test_acc")
        assert sorted((m.step, m.value) for m in history) == [(1, 0.5), (2, 0.6), (3, 0.7)]
        assert client.get_run(run_id).info.status == "FINISHED"
    finally:
        stop(server)


def test_a_model_that_fails_half_way_is_removed_and_a_resumed_run_keeps_one(tmp_path):
    """runs:/<id>/model loads the newest logged model of that name whatever its state: one left
    half-logged (files not sent) would hide the good one; a resumed run's second model would
    show twice in the Models view."""
    from retino.studies.model_registry import run_model
    from retino.tracking.store import mlflow_client

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "MLmodel").write_text("flavors: {}\n")
    with mlflow_run("exp", "a-run", {}, {}) as tracker:
        tracker.log_metrics({"test_acc_selected": 0.5}, step=1)
        first = tracker.log_model(folder, "model", {"test_acc_selected": 0.5}, 1)
        real = tracker.client.log_model_artifacts
        tracker.client.log_model_artifacts = lambda *args: (_ for _ in ()).throw(
            OSError("disk full"))
        with pytest.raises(OSError, match="disk full"):
            tracker.log_model(folder, "model", {"test_acc_selected": 0.5}, 1)
        client = mlflow_client()
        assert run_model(client, tracker.run_id) == (f"models:/{first}", first)
        tracker.client.log_model_artifacts = real
        second = tracker.log_model(folder, "model", {"test_acc_selected": 0.5}, 1)
        models = client.search_logged_models(
            experiment_ids=[tracker.experiment_id],
            filter_string=f"name = 'model' AND source_run_id = '{tracker.run_id}'")
        assert [m.model_id for m in models] == [second]
        history = client.get_metric_history(tracker.run_id, "test_acc_selected")
        assert len(history) == 1  # the link added no second point to the run's chart
