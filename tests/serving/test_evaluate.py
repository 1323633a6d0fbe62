"""python -m retino.evaluate: a trained run evaluated on another prepared set, logged as a new run
beside it and tagged with its source."""

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from retino.core.grades import PROBABILITY_COLUMNS
from retino.data.prepare.cache import cache_dir, prepare_cache
from retino.evaluate import main
from retino.evaluation.predictions import read_predictions
from tests.helpers.sources import add_ungradable_photographs, make_kaggle_source


def evaluations(client, run_id):
    source = client.get_run(run_id)
    return client.search_runs([source.info.experiment_id],
                              filter_string=f"tags.evaluates = '{run_id}'")


def test_evaluating_on_its_own_test_set_gives_the_runs_own_answers(trained_run, monkeypatch):
    """The new run's predictions are the training run's, image for image: the same model,
    preprocessing, resolution and normalisation; its metrics are a training run's keys."""
    run_dir, run_id, uri, _, cache = trained_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert main([run_id, "data=kaggle", f"data.root={cache}", "bootstrap_rounds=20"]) == 0
    client = MlflowClient(uri)
    (evaluation,) = [r for r in evaluations(client, run_id)
                     if r.data.params["data.root"] == str(cache)]
    assert evaluation.info.status == "FINISHED"
    assert evaluation.info.run_name.endswith(f"on {cache.name}")
    trained = client.get_run(run_id).data.metrics
    metrics = evaluation.data.metrics
    for key in ("test_acc_selected", "test_qwk_selected", "test_referable_auc_selected"):
        assert metrics[key] == pytest.approx(trained[key], abs=1e-6), key
    assert {"test_acc_selected_ci_low", "test_referable_sensitivity_at_target_selected",
            "test_majority_baseline"} <= set(metrics)
    assert metrics["test_referable_threshold_selected"] == pytest.approx(
        trained["test_referable_threshold_selected"])  # the run's own operating point
    files = {a.path for a in client.list_artifacts(evaluation.info.run_id)}
    assert {"predictions_test.csv", "confusion_matrix.png", "roc_referable.png"} <= files
    logged = read_predictions(client.download_artifacts(evaluation.info.run_id,
                                                        "predictions_test.csv"))
    own = read_predictions(run_dir / "predictions_test.csv")
    np.testing.assert_allclose(logged[PROBABILITY_COLUMNS], own[PROBABILITY_COLUMNS], atol=1e-6)
    assert evaluation.data.params["evaluates"] == run_id
    assert evaluation.inputs.dataset_inputs  # the external set, as an MLflow dataset


def test_another_set_is_evaluated_and_named(trained_run, tmp_path, monkeypatch):
    _, run_id, uri, _, _ = trained_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    other = make_kaggle_source(tmp_path / "other-raw", patients=6, seed=7)
    add_ungradable_photographs(other)  # a clinic's set: two photographs no one could read
    prepare_cache(other, tmp_path / "other", "center_crop", 64, workers=1, split="none")
    root = cache_dir(tmp_path / "other", "center_crop", 64)
    before = len(evaluations(MlflowClient(uri), run_id))
    assert main([run_id, "data=kaggle", f"data.root={root}", "bootstrap_rounds=0"]) == 0
    runs = evaluations(MlflowClient(uri), run_id)
    assert len(runs) == before + 1
    newest = max(runs, key=lambda r: r.info.start_time)
    assert newest.data.params["data.root"] == str(root)
    assert 0 <= newest.data.metrics["test_acc_selected"] <= 1
    assert newest.data.metrics["test_imageability_selected"] == pytest.approx(12 / 14)
    files = {a.path for a in MlflowClient(uri).list_artifacts(newest.info.run_id)}
    assert "screening.md" in files


@pytest.mark.parametrize("overrides, message", [
    (["data=kagle"], "kaggle"),  # Hydra's list of the valid choices
    (["model=resnet50"], "Cannot override model"),
    (["data.root"], "not an override"),
])
def test_bad_overrides_are_clear_errors(trained_run, monkeypatch, capsys, overrides, message):
    _, run_id, uri, _, _ = trained_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert main([run_id, *overrides]) == 2
    assert message in capsys.readouterr().err
