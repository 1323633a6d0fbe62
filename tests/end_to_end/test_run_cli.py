"""run.py end to end in a subprocess, as a user runs it; checks the MLflow store afterwards."""

import csv
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from contextlib import contextmanager

import pytest
from mlflow.tracking import MlflowClient

from retino import PROJECT_ROOT
from retino.config.params import params_to_log
from retino.core.names import PARENT_TAG
from retino.jobs.lifecycle import JobContext, run_job
from retino.report import main as report_main
from retino.training.devices import execution_params
from tests.conftest import TINY, compose_config
from tests.helpers.cli import api, experiment_runs, free_port, run_cli, server_env
from tests.helpers.runs import fill_hub_cache

pytestmark = pytest.mark.slow


@pytest.mark.slow(seconds=35)
def test_four_way_multirun_logs_four_complete_runs_shown_by_plain_mlflow_ui(tmp_path):
    fill_hub_cache("resnet18")
    fill_hub_cache("resnet50")
    args = ["-m", "model=resnet18,resnet50", "pretrained=true,false", *TINY,
            f"data.root={tmp_path / 'demo'}", "log_model=true", "register_model=dr-grader",
            "plots=true"]
    proc = run_cli(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, all_runs = experiment_runs()
    [parent] = [r for r in all_runs if PARENT_TAG not in r.data.tags]
    runs = [r for r in all_runs if r.data.tags.get(PARENT_TAG) == parent.info.run_id]
    expected_params = params_to_log(compose_config(args[3:]))
    assert sorted(r.info.run_name for r in runs) == [
        "resnet18-pretrained-32px", "resnet18-scratch-32px",
        "resnet50-pretrained-32px", "resnet50-scratch-32px"]
    for run in runs:
        assert run.info.status == "FINISHED"
        params = run.data.params
        # Every config leaf that applies, and what the job resolved device and precision to.
        assert params.keys() == expected_params.keys() | execution_params(compose_config()).keys()
        assert params["model.name"] in run.info.run_name and params["epochs"] == "1"
        assert params["pretrained"] == str("pretrained" in run.info.run_name)
        assert "model=" in run.data.tags["hydra_overrides"] and run.data.tags["git_commit"]
        for metric in ("train_loss", "train_acc", "test_loss", "test_acc", "test_qwk",
                       "test_macro_f1", "test_recall_grade4"):
            history = client.get_metric_history(run.info.run_id, metric)
            assert sorted(m.step for m in history) == [1], metric
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "confusion_matrix.png", "confusion_matrix.csv", "accuracy.png",
                "model_state.pt", "history.csv", "predictions_test.csv", "predictions_val.csv",
                "roc_referable.png"} <= artifacts
        # its MLflow model is an MLflow 3 logged model (the experiment's Models view lists it),
        # its test numbers linked to it, and it is the run's output
        [model] = client.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"name = 'model' AND source_run_id = '{run.info.run_id}'")
        linked = {metric.key: metric.value for metric in model.metrics}
        assert linked["test_qwk_selected"] == run.data.metrics["test_qwk_selected"]
        assert [o.model_id for o in run.outputs.model_outputs] == [model.model_id]
        metrics = run.data.metrics  # one epoch: the selected one, evaluated again from its files
        assert metrics["selected_epoch"] == 1
        assert metrics["test_acc_selected"] == metrics["test_acc"]
        assert "val_qwk" in run.data.metrics and "test_qwk_selected" in run.data.metrics
    # The sweep is a study: a parent run with the command and the report of its four children.
    # An ad-hoc multirun's study is named after the axes it sweeps.
    assert parent.info.status == "FINISHED" and parent.info.run_name == "model×pretrained sweep"
    assert parent.data.tags["study"] == "model×pretrained sweep"
    # its Overview tab holds the report's results table, and says where the whole report is
    written = tmp_path / "multirun" / "report"
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith((written / "results.md").read_text().split("\n## ")[0])
    assert note.endswith(f"(on disk: {written / 'report.html'}).")
    assert "pretrained=true,false" in parent.data.tags["command"]
    report = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"results.md", "results.csv", "comparisons.csv", "comparison.png",
            "confusion_grid.png", "roc_referable.png"} <= report
    written = tmp_path / "multirun" / "report"
    table = (written / "results.csv").read_text().splitlines()
    assert len(table) == 5 and table[0].startswith("run,seeds,test acc % (selected epoch)")
    # Each model against the other, each start against the other: four one-axis pairs.
    pairs = (written / "comparisons.csv").read_text().splitlines()[1:]
    assert sorted(row.split(",")[0] for row in pairs) == [
        "model.name: resnet18 → resnet50"] * 2 + ["pretrained: False → True"] * 2
    # The study registered its best configuration, chosen on validation, linked to both.
    (version,) = client.search_model_versions("name='dr-grader'")
    assert version.run_id in {r.info.run_id for r in runs}
    assert version.tags["study"] == parent.info.run_id
    assert version.tags["selected_by"] == "selection_score"
    # ... and the same report, computed from the predictions files, rebuilt from the store.
    assert report_main(["--parent", parent.info.run_id, "--out", str(tmp_path / "again")]) == 0
    for name in ("results.md", "results.csv", "comparisons.csv"):
        assert (tmp_path / "again" / name).read_text() == (written / name).read_text(), name
    # Plain `mlflow ui` in the store's folder (like the project root) shows the runs and files.
    with mlflow_ui(tmp_path) as url:
        experiments = json.loads(api(url, "/api/2.0/mlflow/experiments/search",
                                     {"max_results": 10}))["experiments"]
        retino_id = next(e["experiment_id"] for e in experiments if e["name"] == "retino")
        shown = json.loads(api(url, "/api/2.0/mlflow/runs/search",
                               {"experiment_ids": [retino_id]}))["runs"]
        assert {r["info"]["run_id"] for r in shown} == {r.info.run_id for r in all_runs}
        run_id = runs[0].info.run_id
        csv = api(url, f"/get-artifact?path=confusion_matrix.csv&run_uuid={run_id}")
        assert csv.decode().startswith("true\\pred,grade0")


@contextmanager
def mlflow_ui(folder):
    """`mlflow ui` started in folder with no tracking URI set, as a user starts it, with one web
    worker (as docs/results-in-mlflow.md suggests on a machine that trains: the default's four
    each import MLflow's server, 10 s of CPU that changed nothing this test checks)."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--port", str(port),
                               "--workers", "1"],
                              cwd=folder, env=server_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def start_cli(args, tmp_path, name):
    """run.py in the background, its output in <name>.log, its run folder <name>/."""
    log = (tmp_path / f"{name}.log").open("w")
    return subprocess.Popen([sys.executable, "run.py", *args, f"hydra.run.dir={tmp_path / name}",
                             f"hydra.sweep.dir={tmp_path / name}"], cwd=PROJECT_ROOT,
                            env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)


def wait_for(condition, timeout=300):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)
    return condition()


@pytest.mark.slow(seconds=20)
def test_same_command_twice_at_once_one_trains_and_after_a_kill_it_resumes(tmp_path):
    # at 64 px: an epoch long enough that the winner is stopped before it ends
    args = [*TINY, "resolution.size=64", "epochs=3", "data.train_size=40",
            f"data.root={tmp_path / 'demo'}"]
    jobs = {name: start_cli(args, tmp_path, name) for name in ("a", "b")}
    assert wait_for(lambda: any(job.poll() is not None for job in jobs.values()))
    [loser] = [name for name, job in jobs.items() if job.poll() is not None]
    [winner] = set(jobs) - {loser}
    client, [run] = experiment_runs()  # the loser started no run of its own
    message = (tmp_path / f"{loser}.log").read_text()
    assert jobs[loser].returncode == 2, message[-3000:]
    assert f"being trained right now as MLflow run {run.info.run_id}" in message
    assert f"process {jobs[winner].pid}" in message and "Traceback" not in message
    # Stop the winner once its first epoch is checkpointed: the run ends KILLED.
    wait_for(lambda: (tmp_path / winner / "last.pt").is_file() or jobs[winner].poll() is not None)
    jobs[winner].terminate()
    jobs[winner].wait(timeout=60)
    client, [run] = experiment_runs()
    # Two epochs are left when it is stopped: finishing first would mean nothing was tested.
    assert run.info.status == "KILLED", "the run finished before the test could stop it"
    # The same command again continues it (run.py's job, here in this process: the two
    # commands above already started as a user starts them, and a third costs seconds).
    run_job(compose_config(args), JobContext(output_dir=tmp_path / "again"))
    client, [again] = experiment_runs()
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "test_acc")]
    assert sorted(steps) == [1, 2, 3]  # one unbroken series: nothing missing, nothing twice


@pytest.mark.slow(seconds=15)
def test_a_sweep_stopped_by_sigterm_ends_its_parent_run(tmp_path, signum=signal.SIGTERM):
    """SIGTERM, as `kill` or a cluster sends it (Ctrl-C's KeyboardInterrupt takes the same path
    from there: tests/jobs/test_job.py stops a study with each exception in-process)."""
    args = ["-m", "seed=0,1", *TINY, "resolution.size=64", "epochs=3", "data.train_size=40",
            f"data.root={tmp_path / 'demo'}"]  # at 64 px: long enough to be stopped
    sweep = start_cli(args, tmp_path, "sweep")
    assert wait_for(lambda: any((tmp_path / "sweep").glob("*/last.pt")) or sweep.poll() is not None)
    sweep.send_signal(signum)
    sweep.wait(timeout=120)
    _, runs = experiment_runs()
    [parent] = [run for run in runs if PARENT_TAG not in run.data.tags]
    assert parent.info.status != "FINISHED", "the sweep finished before the test could stop it"
    assert sweep.returncode != 0 and parent.info.status == "KILLED"
    assert "RUNNING" not in {run.info.status for run in runs}
    assert "KILLED" in {run.info.status for run in runs if run is not parent}  # the stopped job


def metric_history(client, run, metric):
    return [m.value for m in sorted(client.get_metric_history(run.info.run_id, metric),
                                    key=lambda m: m.step)]


def same_training(client, original, copy, copy_client=None, moved=()):
    """The copy ran the original's exact config afresh, with equal numbers (copy_client: the
    copy's store, where it is not the original's; moved: keys that say where, not what, such as
    the data's folder on another machine)."""
    def config(run):
        return {k: v for k, v in run.data.params.items() if k not in ("resume", *moved)}

    assert config(copy) == config(original)
    if not moved:
        assert copy.data.tags["config_hash"] == original.data.tags["config_hash"]
    for metric in ("train_loss", "test_loss", "test_acc", "test_qwk"):
        assert metric_history(copy_client or client, copy, metric) == \
            metric_history(client, original, metric)


def reproduce(*args):
    """python -m retino.reproduce, called in this process (it starts run.py itself): the
    command's own start-up, a few seconds, is the only thing left out."""
    from retino.reproduce import main as reproduce_main

    return subprocess.CompletedProcess(args, reproduce_main(list(args)), "", "(see the log)")


def reviewer(code, store, *args):
    """python -m retino.reproduce in another checkout (code) with another store."""
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{store}", PYTHONPATH=str(code))
    return subprocess.run([sys.executable, "-m", "retino.reproduce", *map(str, args)], cwd=code,
                          env=env, capture_output=True, text=True, timeout=600)


def tampered(bundle, member, folder):
    """A copy of the bundle with one file's bytes changed, the manifest left as exported."""
    copy = folder / "tampered.zip"
    with zipfile.ZipFile(bundle) as source, zipfile.ZipFile(copy, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            target.writestr(item, data.replace(b"1", b"2", 1) if item.filename == member else data)
    return copy


def without_run_ids(text):
    """A report less its title and the lines that name a run by its id (each store's own)."""
    return [line for line in text.splitlines()[1:] if "best seed's run" not in line]


@pytest.mark.slow(seconds=55)
def test_a_run_and_a_study_are_reproduced_the_study_from_its_bundle_elsewhere(
        tmp_path, monkeypatch, capsys, caplog, empty_store):
    """A run again from its id, in the author's store; the study (a two-fold cross-validation,
    sweeps/cross_validation.yaml, whose report pools the folds) exported as one bundle, refused
    when a file changed, the data or the code differ, reproduced in another checkout with
    another store, a verdict per run, and imported into a third store, its report rebuilt."""
    from retino.bundle import main as bundle_main
    from retino.core.names import BUNDLE_TAG, IMPORTED_FROM_TAG
    from retino.jobs.identity import code_version
    from retino.studies.study_report import write_report
    from retino.tracking.records import read_runs
    from tests.helpers.cli import copy_of_the_code

    args = ["-m", "-cd", "sweeps", "-cn", "cross_validation", "data.folds=2", *TINY,
            "deterministic=true", f"data.root={tmp_path / 'demo'}", "augmentation=strong",
            "lr=0.002"]
    assert run_cli(args, tmp_path).returncode == 0
    pooled = (tmp_path / "multirun" / "report" / "cross_validation.csv").read_text()
    assert pooled.splitlines()[1].split(",")[1] == "2 of 2"  # both folds, one configuration
    client, runs = experiment_runs()
    [study] = [run for run in runs if PARENT_TAG not in run.data.tags]
    originals = {run.info.run_id: run for run in runs if run is not study}
    one = next(iter(originals.values()))
    proc = reproduce(one.info.run_id, f"hydra.run.dir={tmp_path / 'again'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    [copy] = [run for run in experiment_runs()[1] if run.data.tags.get("reproduces")]
    assert copy.data.tags["reproduces"] == one.info.run_id
    same_training(client, one, copy)

    # The study as one file: its finished runs' evidence, the data's identity, no weights.
    bundle = tmp_path / "study.zip"
    assert bundle_main(["export", study.info.run_id, "--out", str(bundle)]) == 0
    printed = capsys.readouterr().out
    assert f"Wrote {bundle}: bundle " in printed and ", 2 runs, " in printed and " MB" in printed
    names = zipfile.ZipFile(bundle).namelist()
    assert not [name for name in names if name.endswith((".pt", ".jpeg", "MLmodel"))]
    assert any(name.endswith("/test_label.csv") for name in names)
    # A changed file is named, and nothing runs; nor on other data than the author's.
    member = next(name for name in names if name.endswith("predictions_test.csv"))
    with caplog.at_level(logging.ERROR):
        assert reproduce(str(tampered(bundle, member, tmp_path))).returncode == 2
        assert f"{member} was changed after the bundle was made" in caplog.text
        assert reproduce(str(bundle), f"data.root={tmp_path / 'demo'}", "data.seed=7"
                         ).returncode == 2
        assert "is not the data run" in caplog.text and "train_label.csv" in caplog.text

    # Another checkout, another store: every run again, each identical to the author's.
    code = copy_of_the_code(tmp_path / "reviewer")
    store = tmp_path / "reviewer.db"
    shutil.copy(empty_store, store)  # tables made once (conftest.empty_store)
    proc = reviewer(code, store, bundle, f"data.root={tmp_path / 'reviewer-data'}",
                    f"hydra.sweep.dir={tmp_path / 'study-again'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for run_id in originals:
        assert f"(the author's run {run_id}): identical" in proc.stdout
    reviewers = MlflowClient(f"sqlite:///{store}")
    again = reviewers.search_runs([reviewers.get_experiment_by_name("retino").experiment_id])
    [new_study] = [run for run in again if run.data.tags.get("reproduces")
                   and PARENT_TAG not in run.data.tags]
    assert new_study.info.run_name == "reproduction" and new_study.info.status == "FINISHED"
    copies = [run for run in again if run.data.tags.get(PARENT_TAG) == new_study.info.run_id]
    imported = {run.info.run_id: run.data.tags[IMPORTED_FROM_TAG] for run in again
                if IMPORTED_FROM_TAG in run.data.tags}
    for copy in copies:
        same_training(client, originals[imported[copy.data.tags["reproduces"]]], copy,
                      reviewers, moved=("data.root",))
    # named as the original study's runs: by its swept axis, not by the reproduction's group
    assert sorted(run.info.run_name for run in copies) == sorted(
        run.info.run_name for run in originals.values())
    assert sorted(run.data.params["data.fold"] for run in copies) == ["0", "1"]
    with (tmp_path / "study-again" / "report" / "reproduction.csv").open(newline="") as f:
        table = list(csv.DictReader(f))
    assert sorted({row["original run"] for row in table}) == sorted(originals)
    # deterministic=true on a CPU: each fold's predictions again, to the last digit
    assert {row["verdict"] for row in table} == {"identical"} and len(table) == 3 * 2

    # The reviewer's code differs from the author's: refused, naming the commit to check out.
    # (Here, in this process, with the changed checkout's code version: a third command's
    # start-up would cost the suite ten seconds.)
    (code / "retino" / "training" / "loop.py").open("a").write("# a reviewer's change\n")
    changed = code_version(code)
    monkeypatch.setattr("retino.studies.reproduction.code_version", lambda: changed)
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert reproduce(str(bundle), f"data.root={tmp_path / 'reviewer-data'}").returncode == 2
    commit = study.data.tags["git_commit"].removesuffix("-dirty")
    assert f"git checkout {commit}" in caplog.text and "--allow-code-change" in caplog.text

    # Imported into a third store without running: the author's report, rebuilt.
    shutil.copy(empty_store, tmp_path / "third.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'third.db'}")
    assert bundle_main(["import", str(bundle)]) == 0
    third, imported = experiment_runs()
    assert sorted(run.data.tags[IMPORTED_FROM_TAG] for run in imported) == sorted(
        [study.info.run_id, *originals])
    [parent] = [run for run in imported if PARENT_TAG not in run.data.tags]
    assert parent.data.tags[BUNDLE_TAG] and parent.info.status == "FINISHED"
    write_report(read_runs(parent_id=parent.info.run_id), tmp_path / "rebuilt", "rebuilt")
    authors_report = (tmp_path / "multirun" / "report" / "results.md").read_text()
    rebuilt = (tmp_path / "rebuilt" / "results.md").read_text()
    assert without_run_ids(rebuilt) == without_run_ids(authors_report)
