"""The skip / resume / new / busy decision, on a table of earlier runs kept in a real (temporary)
SQLite store with real output folders and job locks; no subprocess."""

import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from retino import PROJECT_ROOT
from retino.core.locks import JobLock, RunBusyError, lock_holder
from retino.jobs.decision import BUSY, NEW, RESUME, SKIP, JobIdentity, decide
from retino.jobs.reconcile import earlier_runs

JOB = JobIdentity("cfg0", "code-a", "data-a")
CODE = {"same": "code-a", "other": "code-b"}
DATA = {"same": "data-a", "other": "data-b"}


def store_run(tmp_path, status, code="same", data="same", checkpoint=True):
    """A run of JOB's config in the store, as an earlier job would have left it."""
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("retino") or client.get_experiment(
        client.create_experiment("retino"))
    folder = tmp_path / f"run-{len(list(tmp_path.glob('run-*')))}"
    folder.mkdir()
    if checkpoint:  # a readable one: an unreadable one is set aside (test_hostile_inputs)
        import torch

        torch.save({"model": {}, "epoch": 1}, folder / "last.pt")
    run = client.create_run(experiment.experiment_id, tags={
        "config_hash": JOB.config_hash, "code_version": CODE[code], "data_digest": DATA[data],
        "output_dir": str(folder)})
    if status != "RUNNING":
        client.set_terminated(run.info.run_id, status)
    time.sleep(0.002)  # distinct start times: "newest first" is well defined
    return run.info.run_id, folder


# (earlier run's state, its code, its data, resume, in a sweep) -> what the job does
TABLE = [
    ("FINISHED", "same", "same", True, True, SKIP),
    ("FINISHED", "same", "same", True, False, NEW),  # a single run always trains
    ("FINISHED", "other", "same", True, True, NEW),
    ("FINISHED", "same", "other", True, True, NEW),
    ("FINISHED", "same", "same", False, True, NEW),
    ("FAILED", "same", "same", True, True, RESUME),
    ("FAILED", "other", "same", True, True, NEW),
    ("KILLED", "same", "same", True, False, RESUME),
    ("KILLED", "same", "other", True, False, NEW),
    ("KILLED", "same", "same", False, False, NEW),
    ("RUNNING-dead", "same", "same", True, True, RESUME),
    ("RUNNING-dead", "other", "other", True, True, NEW),
    ("RUNNING-live", "same", "same", True, True, BUSY),
    ("RUNNING-live", "other", "same", True, False, BUSY),
    ("RUNNING-live", "same", "same", False, True, NEW),  # a separate run of its own
]


@pytest.mark.parametrize("state, code, data, resume, in_sweep, expected", TABLE)
def test_decision_table(tmp_path, state, code, data, resume, in_sweep, expected):
    run_id, folder = store_run(tmp_path, state.split("-")[0], code, data)
    lock = JobLock(folder).acquire() if state == "RUNNING-live" else None
    if lock is not None:
        lock.record(run_id)
    try:
        decision = decide(JOB, earlier_runs("retino", JOB.config_hash), resume, in_sweep)
    finally:
        if lock is not None:
            lock.release()
    assert decision.action == expected, decision.reason
    if expected in (SKIP, RESUME, BUSY):
        assert decision.run.run_id == run_id and run_id in decision.reason
    if expected == BUSY:
        assert f"process {os.getpid()}" in decision.reason
    if (code, data, expected) == ("other", "same", NEW):
        assert "code changed since run" in decision.reason and "code-a" in decision.reason


def test_no_checkpoint_no_resume_and_a_finished_run_with_the_same_code_is_reused(tmp_path):
    store_run(tmp_path, "KILLED", checkpoint=False)
    assert decide(JOB, earlier_runs("retino", "cfg0"), True, False).action == NEW
    store_run(tmp_path, "FINISHED")
    store_run(tmp_path, "FINISHED", code="other")  # newer, but of other code
    decision = decide(JOB, earlier_runs("retino", "cfg0"), True, True)
    assert decision.action == SKIP and decision.run.code_version == "code-a"
    assert decide(JOB, [], True, True).reason == "no earlier run of this configuration"


def test_a_second_holder_of_a_job_lock_is_told_who_holds_it(tmp_path):
    with JobLock(tmp_path) as lock:
        lock.record("abc123")
        assert lock_holder(tmp_path)["run_id"] == "abc123"
        with pytest.raises(RunBusyError, match=rf"run abc123 on host .*process {os.getpid()}"):
            JobLock(tmp_path).acquire()
    assert lock_holder(tmp_path) is None  # released with the block


def test_a_job_lock_dies_with_its_process_even_on_kill_9(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; from retino.core.locks import JobLock; "
         f"lock = JobLock({str(tmp_path)!r}).acquire(); lock.record('r1'); "
         "print('held', flush=True); time.sleep(60)"],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert lock_holder(tmp_path)["pid"] == holder.pid
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    assert lock_holder(tmp_path) is None
    JobLock(tmp_path).acquire().release()  # free for the next job
