"""A team's shared tracking server: a real `mlflow server` on loopback (SQLite behind it, artifacts
served by it); parallel sweep jobs log over HTTP through MLFLOW_TRACKING_URI."""

import os
import subprocess
import sys
from contextlib import contextmanager

import pytest

from tests.conftest import TINY
from tests.test_launchers import assert_complete, study_runs
from tests.test_run_cli import api, free_port, run_cli

pytestmark = pytest.mark.slow


@contextmanager
def mlflow_server(folder):
    """`mlflow server` as its README starts one: a database and an artifact folder of its own."""
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "2", "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
               "--artifacts-destination", str(folder / "artifacts")]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    server = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        api(url, "/health")  # waits for the server to answer
        yield url
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def test_parallel_jobs_log_over_http_to_a_tracking_server(tmp_path, monkeypatch):
    (tmp_path / "server").mkdir()
    with mlflow_server(tmp_path / "server") as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        proc = run_cli(["-m", "hydra/launcher=parallel", "seed=0,1", *TINY,
                        f"data.root={tmp_path / 'demo'}"], tmp_path)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        client, parent, children = study_runs()
        assert len(children) == 2 and parent.info.status == "FINISHED"
        for run in children:
            assert_complete(client, run, epochs=1)
            assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # served by the server
    # The files went to the server's own artifact folder.
    stored = {p.name for p in (tmp_path / "server" / "artifacts").rglob("*") if p.is_file()}
    assert {"model_state.pt", "confusion_matrix.png", "results.md"} <= stored
