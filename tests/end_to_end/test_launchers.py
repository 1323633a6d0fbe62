"""Sweeps through the launcher presets (conf/hydra/launcher/): jobs in parallel on one machine
(logging to a shared tracking server), the submitit (SLURM) path run locally with a preemption,
and the GPU lease of parallel jobs."""

import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from retino.jobs.launchers import gpu_lease
from tests.conftest import TINY
from tests.helpers.cli import (
    api,
    assert_complete,
    free_port,
    run_cli,
    server_env,
    study_runs,
)


@contextmanager
def mlflow_server(folder, empty_store):
    """`mlflow server` as its README starts one: a database (a copy of the empty store, its
    tables made) and an artifact folder of its own."""
    shutil.copy(empty_store, folder / "server.db")
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
               "--artifacts-destination", str(folder / "artifacts")]
    server = subprocess.Popen(command, cwd=folder, env=server_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        api(url, "/health")  # waits for the server to answer
        yield url
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def test_gpu_lease_gives_running_jobs_different_gpus_and_frees_them(tmp_path):
    with gpu_lease(tmp_path, job_num=0, count=2) as first:
        with gpu_lease(tmp_path, job_num=2, count=2) as second:  # job 2 prefers GPU 0: taken
            assert (first, second) == (0, 1)
            with gpu_lease(tmp_path, job_num=3, count=2) as third:  # more jobs than GPUs
                assert third == 1
    with gpu_lease(tmp_path, job_num=1, count=2) as again:
        assert again == 1  # its own GPU, free again
    with gpu_lease(tmp_path, job_num=4, count=2) as again:
        assert again == 0


@pytest.mark.slow(seconds=35)
def test_parallel_jobs_with_loader_workers_log_over_http_to_a_tracking_server(
        tmp_path, monkeypatch, empty_store):
    """Two jobs at once (one per core here), each starting loader worker processes inside
    joblib's (loky) job process, logging over HTTP to a team's `mlflow server` that stores and
    serves the files.
    (Many jobs on one SQLite file: tests/tracking/test_store.py.)"""
    (tmp_path / "server").mkdir()
    with mlflow_server(tmp_path / "server", empty_store) as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        # at 64 px: jobs long enough to run side by side
        proc = run_cli(["-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2",
                        "seed=0,1", *TINY, "resolution.size=64", "data.num_workers=2",
                        f"data.root={tmp_path / 'demo'}"], tmp_path)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        client, parent, children = study_runs()
        assert sorted(r.data.params["seed"] for r in children) == ["0", "1"]
        # A run's name shows the axis its study sweeps; the report still pools the seeds.
        assert sorted(r.info.run_name for r in children) == [
            f"resnet18-scratch-64px seed={seed}" for seed in range(2)]
        for run in children:
            assert_complete(client, run, epochs=1)
            assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # served by the server
        assert parent.info.status == "FINISHED"
        report = {a.path for a in client.list_artifacts(parent.info.run_id)}
        assert {"results.md", "report.html"} <= report
        assert "comparison.png" not in report  # a sweep with plots=false draws no figures
        results = client.download_artifacts(parent.info.run_id, "results.csv", str(tmp_path))
        assert [row.split(",")[:2] for row in Path(results).read_text().splitlines()[1:]] == [
            ["resnet18-scratch-64px", "2"]]
        assert most_at_once(children) >= 2  # jobs ran side by side (tiny ones may not overlap)
    # Each job knew it shared the machine's shared memory with the other.
    logs = "".join(log.read_text() for log in tmp_path.rglob("run.log"))
    assert logs.count("2 loader workers (2 job(s) at once on this machine)") == 2, logs[-2000:]
    # The files went to the server's own artifact folder.
    stored = {p.name for p in (tmp_path / "server" / "artifacts").rglob("*") if p.is_file()}
    assert {"model_state.pt", "history.csv", "results.md"} <= stored


def most_at_once(runs) -> int:
    """The largest number of runs that were running at one moment."""
    events = sorted([(r.info.start_time, 1) for r in runs] + [(r.info.end_time, -1) for r in runs])
    running, most = 0, 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


def _submitit_tasks(folder: Path) -> list[int]:
    """Process ids of the submitit jobs whose folder is under `folder`."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "submitit.core._submit" in args and any(str(folder) in a for a in args):
            pids.append(int(cmdline.parent.name))
    return pids


@pytest.mark.slow(seconds=30)
def test_a_submitit_job_preempted_mid_training_is_requeued_and_resumes_its_run(tmp_path):
    """One job of a sweep (several jobs at once: the parallel test above), preempted as SLURM
    preempts it, requeued by submitit, and continued in its own run."""
    from retino import PROJECT_ROOT

    sweep = tmp_path / "multirun"
    # at 64 px: an epoch long enough to be preempted in
    args = ["-m", "hydra/launcher=local", "seed=0", *TINY, "resolution.size=64", "epochs=2",
            "data.train_size=40",
            "data.num_workers=0",  # one process per job: the one to preempt
            f"data.root={tmp_path / 'demo'}", f"hydra.sweep.dir={sweep}"]
    log = tmp_path / "run.out"  # a file, not a pipe nobody reads until the end
    proc = subprocess.Popen([sys.executable, "run.py", *args], cwd=PROJECT_ROOT,
                            env=dict(os.environ), stdout=log.open("w"),
                            stderr=subprocess.STDOUT, text=True)
    for _ in range(1800):  # preempt it once its first epoch is checkpointed
        if any(sweep.glob("*/last.pt")) or proc.poll() is not None:
            break
        time.sleep(0.1)
    tasks = _submitit_tasks(sweep)
    for pid in tasks:
        os.kill(pid, signal.SIGUSR2)  # what SLURM sends before a time limit or preemption
    proc.wait(timeout=600)
    output = log.read_text()
    assert proc.returncode == 0, output[-4000:]
    assert len(tasks) == 1, "the job ended before it could be preempted"
    [job] = [d for d in (sweep / ".submitit").iterdir() if d.name.isdigit()]
    job_log = "".join(p.read_text(errors="replace") for p in job.glob("*_log.*"))
    assert "Requeued job" in job_log and "Resuming from" in job_log, job_log[-3000:]
    client, parent, [run] = study_runs()  # it continued its own run: no second run
    assert_complete(client, run, epochs=2)
    assert "error" not in run.data.tags  # the preemption no longer describes the run
    assert parent.info.status == "FINISHED"


def test_jobs_at_once_is_the_joblib_launchers_count():
    from omegaconf import OmegaConf

    from run import jobs_at_once

    assert jobs_at_once(OmegaConf.create({"n_jobs": 4})) == 4
    assert jobs_at_once(OmegaConf.create({"n_jobs": -1})) == os.cpu_count()  # joblib: all cores
    assert jobs_at_once(OmegaConf.create({"_target_": "BasicLauncher"})) == 1  # one at a time
