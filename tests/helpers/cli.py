"""run.py in a subprocess and the MLflow store it leaves: runs, a study's runs, a server's API."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from mlflow.tracking import MlflowClient

from retino import PROJECT_ROOT
from retino.core.names import PARENT_TAG

STEPS_OF_EVERY_EPOCH = ("train_loss", "train_acc", "test_loss", "test_acc", "test_qwk")
RUN_FILES = {"config.yaml", "confusion_matrix.csv", "model_state.pt", "history.csv",
             "report.html"}  # and figures, where a run draws them (plots=true)


def run_cli(args, tmp_path, timeout=600):
    env = dict(os.environ)  # carries the test's MLFLOW_TRACKING_URI and TORCH_HOME
    return subprocess.run([sys.executable, "run.py", *args,
                           f"hydra.sweep.dir={tmp_path / 'multirun'}",
                           f"hydra.run.dir={tmp_path / 'outputs'}"],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def experiment_runs(name="retino"):
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(name)
    return client, client.search_runs([experiment.experiment_id])


def server_env() -> dict[str, str]:
    """The environment of an `mlflow server` or `mlflow ui` a test starts: the test's, less its
    tracking URI (the server is the store). MLflow's GenAI job runner is off in every test's
    environment (conftest.py)."""
    return {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def api(url, path, body=None):
    data = json.dumps(body).encode() if body else None
    request = urllib.request.Request(f"{url}{path}", data=data,
                                     headers={"Content-Type": "application/json"})
    for _ in range(120):  # the server needs a few seconds to start
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.read()
        except urllib.error.HTTPError:
            raise  # the server answered: a wrong request, not a slow start
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"mlflow ui did not answer at {url}")


def study_runs():
    """(client, parent run, its child runs) of the one study in the store."""
    client, runs = experiment_runs()
    [parent] = [r for r in runs if PARENT_TAG not in r.data.tags]
    children = [r for r in runs if r.data.tags.get(PARENT_TAG) == parent.info.run_id]
    return client, parent, children


def assert_complete(client, run, epochs):
    """FINISHED, with every epoch's metrics exactly once and the run's files."""
    assert run.info.status == "FINISHED", run.data.tags.get("error")
    for key in STEPS_OF_EVERY_EPOCH:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert sorted(steps) == list(range(1, epochs + 1)), key
    assert RUN_FILES <= {a.path for a in client.list_artifacts(run.info.run_id)}


def copy_of_the_code(folder):
    """The files that define a run, plus a README, as a checkout outside git would hold them."""
    for name in ("retino", "conf"):
        shutil.copytree(PROJECT_ROOT / name, folder / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("run.py", "README.md"):
        shutil.copy(PROJECT_ROOT / name, folder / name)
    return folder
