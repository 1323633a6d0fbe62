"""The job lifecycle (retino/jobs/lifecycle.py) in-process, as run.py drives it: identity tags,
skip and
resume decisions, studies that keep their rows; a real SQLite store, no subprocess."""

import logging
import math
import os

import pytest
from mlflow.tracking import MlflowClient

import retino.training.loop
import retino.training.pipeline
from retino.core.locks import JobLock
from retino.core.names import PARENT_ENV
from retino.jobs.identity import code_version
from retino.jobs.lifecycle import JobContext, run_job
from retino.jobs.plan import plan_job, with_execution
from retino.studies.callbacks import study_guard
from retino.tracking.records import read_runs
from retino.tracking.runs import start_parent_run
from retino.training.devices import execution_params
from tests.conftest import TINY, compose_config
from tests.helpers.cli import copy_of_the_code
from tests.helpers.sources import make_kaggle_folder


def runs_by_id():
    client = MlflowClient()
    experiment = client.get_experiment_by_name("retino")
    return {run.info.run_id: run for run in client.search_runs([experiment.experiment_id])}


def sweep_job(tmp_path, name, parent):
    return JobContext(output_dir=tmp_path / name, overrides=("seed=0",), multirun=True,
                      sweep_dir=tmp_path, parent_run_id=parent)


def test_a_run_records_its_code_version_data_digest_and_dataset(tiny_cfg, tmp_path):
    objective = run_job(tiny_cfg, JobContext(output_dir=tmp_path / "out"))
    [run] = runs_by_id().values()
    tags = run.data.tags
    assert run.info.status == "FINISHED" and run.data.metrics["selection_score"] == objective
    assert tags["code_version"] == code_version() and len(tags["data_digest"]) == 12
    assert tags["git_commits"] == tags["git_commit"] and tags["output_dir"] == str(tmp_path / "out")
    [dataset] = run.inputs.dataset_inputs
    assert dataset.dataset.digest == tags["data_digest"]
    assert '"train_images": 20' in dataset.dataset.profile


def test_the_run_page_and_the_console_end_with_the_result_and_where_the_report_is(
        tmp_path, caplog, capfd):
    """The run's description (its Overview tab in mlflow ui) and the job's last console lines
    hold the headline of report.html, then where the report and the run are; MLflow's
    CloudPickle warning, which ended every run's output, is said once in retino's words."""
    caplog.set_level(logging.INFO)
    cfg = compose_config([*TINY, f"data.root={tmp_path / 'demo'}", "log_model=true"])
    run_job(cfg, JobContext(output_dir=tmp_path / "out"))
    [run] = runs_by_id().values()
    page = (tmp_path / "out" / "report.html").read_text()
    note = run.data.tags["mlflow.note.content"]
    accuracy = next(line for line in note.splitlines() if line.startswith("- Test accuracy"))
    assert accuracy[2:] in page and "Referable DR (grade ≥ 2), test, all photographs: AUC" in note
    assert note.endswith(f"(on disk: {tmp_path / 'out' / 'report.html'}).")
    last = caplog.records[-1].getMessage()
    assert last.startswith("Result of resnet18-scratch-32px:") and accuracy[2:] in last
    assert f"Report: {tmp_path / 'out' / 'report.html'}" in last
    assert f"In mlflow ui: http://127.0.0.1:5000/#/experiments/1/runs/{run.info.run_id}" in last
    assert "CloudPickle" not in capfd.readouterr().err
    assert any(record.getMessage().startswith("The MLflow model holds retino's grader pickled")
               for record in caplog.records)


@pytest.mark.slow
def test_a_study_rerun_skips_unless_the_code_changed_and_every_study_keeps_its_rows(
        tiny_cfg, tmp_path, monkeypatch, caplog):
    code = copy_of_the_code(tmp_path / "checkout")
    monkeypatch.setattr("retino.jobs.plan.code_version", lambda: code_version(code))
    first_study = start_parent_run("retino", "first", {})
    run_job(tiny_cfg, sweep_job(tmp_path, "a", first_study))
    [trained] = set(runs_by_id()) - {first_study}
    (code / "README.md").write_text("An edited README changes no result.\n")
    second_study = start_parent_run("retino", "second", {})
    run_job(tiny_cfg, sweep_job(tmp_path, "b", second_study))
    assert set(runs_by_id()) == {trained, first_study, second_study}  # skipped: nothing new
    for study in (first_study, second_study):
        assert [run.run_id for run in read_runs(parent_id=study)] == [trained]
    with (code / "retino" / "train.py").open("a") as source:
        source.write("# a bug fix\n")
    third_study = start_parent_run("retino", "third", {})
    with caplog.at_level(logging.INFO, logger="retino"):
        run_job(tiny_cfg, sweep_job(tmp_path, "c", third_study))
    assert f"code changed since run {trained}" in caplog.text
    [retrained] = [run.run_id for run in read_runs(parent_id=third_study)]
    assert retrained != trained and runs_by_id()[retrained].info.status == "FINISHED"
    assert [run.run_id for run in read_runs(parent_id=first_study)] == [trained]


def test_an_interrupted_run_continues_and_records_every_commit_it_trained_under(
        tmp_path, monkeypatch):
    cfg = compose_config(TINY + [f"data.root={tmp_path / 'demo'}", "epochs=2"])
    job = JobContext(output_dir=tmp_path / "out")
    original_log_epoch = retino.training.loop._log_epoch

    def killed_after_epoch_1(row, epochs):
        raise KeyboardInterrupt  # after epoch 1's checkpoint and metrics

    monkeypatch.setattr("retino.jobs.identity.git_commit", lambda: "commit-1")
    monkeypatch.setattr("retino.training.loop._log_epoch", killed_after_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        run_job(cfg, job)
    [run] = runs_by_id().values()
    assert run.info.status == "KILLED"
    monkeypatch.setattr("retino.training.loop._log_epoch", original_log_epoch)
    monkeypatch.setattr("retino.jobs.identity.git_commit", lambda: "commit-2")
    study = start_parent_run("retino", "study", {})
    run_job(cfg, sweep_job(tmp_path, "elsewhere", study))  # continued by a study's job
    again = runs_by_id()[run.info.run_id]
    assert again.info.status == "FINISHED" and len(runs_by_id()) == 2  # itself and the study
    assert again.data.tags["git_commit"] == "commit-1"  # where it started
    assert again.data.tags["git_commits"] == "commit-1 commit-2"
    assert [r.run_id for r in read_runs(parent_id=study)] == [run.info.run_id]
    steps = [m.step for m in MlflowClient().get_metric_history(run.info.run_id, "test_acc")]
    assert sorted(steps) == [1, 2]
    assert not (tmp_path / "elsewhere").exists()  # it trained on in its own folder


def test_a_bad_sweep_job_is_recorded_failed_and_a_bad_single_run_exits_2(tmp_path):
    cfg = compose_config(TINY + [f"data.root={tmp_path / 'demo'}", "lr=-1"])
    parent = start_parent_run("retino", "study", {})
    assert math.isnan(run_job(cfg, sweep_job(tmp_path, "bad", parent)))  # the sweep goes on
    [failed] = read_runs(parent_id=parent)
    assert failed.status == "FAILED" and "lr=-1.0 must be a positive number" in failed.tags["error"]
    assert "config_hash" not in failed.tags  # never taken for a run of that config
    with pytest.raises(SystemExit) as stop:
        run_job(cfg, JobContext(output_dir=tmp_path / "single"))
    assert stop.value.code == 2


def test_a_run_whose_photograph_is_bad_ends_failed_with_its_error_and_exits_2(tmp_path,
                                                                            caplog):
    """The run has started when its photographs are looked over (before the first epoch): it
    ends FAILED with the file named in its error tag, and the job exits 2 with that message
    alone. (run.py's status and output for such an error, from a shell: the loser of
    tests/end_to_end/test_run_cli.py's two commands at once.)"""
    root = make_kaggle_folder(tmp_path / "dr")
    (root / "images" / "1_left_train.jpeg").write_bytes(b"truncated")
    cfg = compose_config(["data=kaggle", f"data.root={root}", "resolution=64px", "epochs=1",
                          "batch_size=2", "data.num_workers=2",
                          "data.val_fraction=0"])  # 6 images: too few to split
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as stop:
        run_job(cfg, JobContext(output_dir=tmp_path / "out"))
    assert stop.value.code == 2
    assert "1 photograph(s) cannot be trained on" in caplog.text
    assert "1_left_train.jpeg: not an image" in caplog.text and "Traceback" not in caplog.text
    [run] = runs_by_id().values()
    assert run.info.status == "FAILED" and "1_left_train.jpeg" in run.data.tags["error"]


def test_a_job_replacing_its_dead_attempt_ends_it_and_the_study_reports_only_the_new_run(
        tiny_cfg, tmp_path, monkeypatch):
    def preempted(*args, **kwargs):
        raise KeyboardInterrupt  # before the first checkpoint

    original_fit = retino.training.pipeline.fit
    monkeypatch.setattr("retino.training.pipeline.fit", preempted)
    study = start_parent_run("retino", "study", {})
    with pytest.raises(KeyboardInterrupt):
        run_job(tiny_cfg, sweep_job(tmp_path, "first", study))
    [attempt] = set(runs_by_id()) - {study}
    MlflowClient().update_run(attempt, status="RUNNING")  # as a `kill -9` leaves it
    monkeypatch.setattr("retino.training.pipeline.fit", original_fit)
    run_job(tiny_cfg, sweep_job(tmp_path, "requeued", study))
    [replacement] = set(runs_by_id()) - {study, attempt}
    old = runs_by_id()[attempt]
    assert old.info.status == "KILLED" and old.data.tags["superseded_by"] == replacement
    assert f"found by run {replacement}" in old.data.tags["error"]
    assert [r.run_id for r in read_runs(parent_id=study)] == [replacement]


def test_a_sweep_job_whose_run_is_live_elsewhere_fails_alone_and_is_recorded(tiny_cfg, tmp_path):
    plan = with_execution(tiny_cfg, plan_job(tiny_cfg))  # the identity a job decides with
    folder = tmp_path / "elsewhere"
    client = MlflowClient()
    experiment = client.create_experiment("retino")
    live = client.create_run(experiment, tags={
        "config_hash": plan.identity.config_hash, "code_version": plan.identity.code_version,
        "data_digest": plan.identity.data_digest, "output_dir": str(folder)}).info.run_id
    study = start_parent_run("retino", "study", {})
    with JobLock(folder) as lock:  # another process trains that run right now
        lock.record(live)
        assert math.isnan(run_job(tiny_cfg, sweep_job(tmp_path, "job", study)))
    [failed] = read_runs(parent_id=study)
    assert failed.status == "FAILED" and "config_hash" not in failed.tags
    assert f"being trained right now as MLflow run {live}" in failed.tags["error"]
    assert runs_by_id()[live].info.status == "RUNNING"  # untouched


@pytest.mark.parametrize("stop, status", [(KeyboardInterrupt(), "KILLED"),
                                          (SystemExit(143), "KILLED"),
                                          (RuntimeError("sweeper broke"), "FAILED")])
def test_a_study_stopped_early_ends_its_parent_run(monkeypatch, stop, status):
    parent = start_parent_run("retino", "study", {})
    monkeypatch.setenv(PARENT_ENV, parent)
    with pytest.raises(type(stop)), study_guard():
        raise stop
    assert MlflowClient().get_run(parent).info.status == status
    assert PARENT_ENV not in os.environ


def test_cifar10_init_is_a_run_of_its_own_that_the_dr_run_points_to(tmp_path):
    """In a study, the pretraining run is nested under the study's run (its page shows what it
    caused), and is still not one of the study's runs in its report."""
    from retino.core.names import PARENT_TAG
    from tests.helpers.runs import cifar_cfg_overrides
    from tests.helpers.sources import write_cifar10

    write_cifar10(tmp_path / "cifar")
    cfg = compose_config([*cifar_cfg_overrides(tmp_path), "pretrain.epochs=1"])
    study = start_parent_run("retino", "cifar10_init", {})
    run_job(cfg, sweep_job(tmp_path, "out", study))
    by_name = {run.info.run_name: run for run in runs_by_id().values()}
    assert by_name["cifar10-pretrain-resnet18"].data.tags[PARENT_TAG] == study
    assert [run.name for run in read_runs(parent_id=study)] == ["resnet18-pretrained-cifar10-32px"]
    pretraining = by_name["cifar10-pretrain-resnet18"]
    dr_run = by_name["resnet18-pretrained-cifar10-32px"]
    assert pretraining.info.status == dr_run.info.status == "FINISHED"
    assert dr_run.data.tags["cifar10_pretrain_run_id"] == pretraining.info.run_id
    assert pretraining.data.tags["code_version"] == dr_run.data.tags["code_version"]
    assert "cifar10_test_acc" in pretraining.data.metrics
    assert dr_run.data.params["pretrain.epochs"] == "1"
    execution = execution_params(cfg)  # what it ran on, resolved, beside the config's `auto`
    assert {key: dr_run.data.params[key] for key in execution} == execution
