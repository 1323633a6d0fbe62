"""Hyperparameter search: sweeps/search.yaml through Hydra's Optuna sweeper, on the smoke preset.
The objective is the validation metric a run selects its epoch by, a failed trial is recorded and
the search goes on, and the study's report names the best configuration. (It is also the test of
a study with a bad job: the others run, the bad one is kept FAILED with its error, the study
ends FAILED and the command exits non-zero.)"""

import re

import pytest

from tests.conftest import TINY
from tests.helpers.cli import run_cli, study_runs


@pytest.mark.slow(seconds=17)
def test_a_three_trial_search_optimises_the_validation_metric_past_a_failed_trial(tmp_path):
    # batch_size 0 is invalid: with the sampler's seed 0, the first trial draws it and fails.
    proc = run_cli(["-m", "-cd", "sweeps", "-cn", "search", *TINY, "hydra.sweeper.n_trials=3",
                    "+hydra.sweeper.params.batch_size='choice(8,4,0)'",
                    f"data.root={tmp_path / 'demo'}"], tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "1 of 3 jobs failed" in output, output[-3000:]
    client, parent, trials = study_runs()
    assert parent.data.tags["study"] == "search" and len(trials) == 3
    assert sorted(run.info.status for run in trials) == ["FAILED", "FINISHED", "FINISHED"]
    assert parent.info.status == "FAILED"
    [failed] = [run for run in trials if run.info.status == "FAILED"]
    assert "batch_size=0 must be at least 1" in failed.data.tags["error"]
    assert len({run.info.run_name for run in trials}) == 3  # each named by its trial's values
    assert all(" lr=" in run.info.run_name for run in trials)
    finished = [run for run in trials if run.info.status == "FINISHED"]
    # What Optuna maximised is each run's selection_score: its validation kappa.
    best_value = float(re.search(r"Best value: (\S+)", output).group(1))
    scores = {run.info.run_id: run.data.metrics["selection_score"] for run in finished}
    assert best_value == pytest.approx(max(scores.values()))
    assert all(run.data.metrics["selection_score"] == run.data.metrics["val_qwk_selected"]
               for run in finished)
    results = (tmp_path / "multirun" / "report" / "results.md").read_text()
    best = re.search(r"\*\*Best configuration\*\* by its validation metric.*run (\w+)\)", results)
    assert best and scores[best.group(1)] == pytest.approx(best_value)


def search_config(val_fraction=0.1, metric="val_qwk", direction="maximize", space=None,
                  command_line=()):
    from omegaconf import OmegaConf

    sweeper = {"direction": direction} if direction else {}
    sweeper["params"] = space or {"lr": "tag(log, interval(0.0001, 0.01))"}
    return OmegaConf.create({"hydra": {"sweeper": sweeper,
                                       "overrides": {"task": list(command_line)}},
                             "data": {"val_fraction": val_fraction},
                             "selection_metric": metric, "experiment": "retino"})


@pytest.mark.parametrize("where, swept", [
    ("space", "choice(0, 0.1)"), ("space", "interval(0.0, 0.3)"), ("space", "range(0, 0.3, 0.1)"),
    ("space", "tag(log, interval(0, 0.2))"), ("command line", "0,0.1")])
def test_a_search_whose_space_holds_no_validation_split_is_refused(where, swept):
    """The base config has a validation split; a point of the search space has none."""
    from retino.studies.callbacks import search_problem

    if where == "space":
        config = search_config(space={"data.val_fraction": swept})
    else:
        config = search_config(command_line=[f"data.val_fraction={swept}"])
    problem = search_problem(config)
    assert problem and "data.val_fraction=0" in problem and swept in problem
    assert search_problem(search_config(space={"data.val_fraction": "interval(0.05, 0.3)"})) \
        is None


def test_a_search_never_tunes_on_the_test_set_nor_maximises_a_loss():
    from retino.studies.callbacks import search_problem

    assert search_problem(search_config()) is None
    assert search_problem(search_config(val_fraction=0, direction=None)) is None  # a grid
    assert "data.val_fraction" in search_problem(search_config(val_fraction=0))
    assert "hydra.sweeper.direction=minimize" in search_problem(search_config(metric="val_loss"))
    assert search_problem(search_config(metric="val_loss", direction="minimize")) is None


def test_a_search_without_validation_is_refused_before_any_run(caplog):
    """Refused with exit status 2: Hydra would turn a callback's exception into a warning and
    run the search anyway (seen with the real CLI)."""
    from mlflow.tracking import MlflowClient

    from retino.studies.callbacks import StudyCallback

    with pytest.raises(SystemExit) as stopped:
        StudyCallback().on_multirun_start(search_config(val_fraction=0))
    assert stopped.value.code == 2 and "tune on the test set" in caplog.text
    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert client.search_runs(experiments) == []  # no parent run, no trial
