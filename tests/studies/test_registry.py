"""Registering a study's best configuration: chosen on validation (never the test set when a
validation split exists), the configuration's mean over seeds, its best seed's model."""

import numpy as np
import pandas as pd
import pytest

from retino.core.errors import ConfigError
from retino.studies.comparison import best_run
from retino.studies.model_registry import register_best
from retino.tracking.records import RunRecord

VAL = pd.DataFrame({"image": ["a"], "grade": [0]})  # stands for a predictions_val.csv


def record(run_id, model, seed, score, test_qwk, val=VAL, metric="val_qwk", status="FINISHED"):
    params = {"model.name": model, "seed": str(seed), "selection_metric": metric}
    return RunRecord(run_id, f"{model}-scratch-64px", status, params, {}, {},
                     {"selection_score": score, "test_qwk_selected": test_qwk}, None, None, val)


def test_the_best_configuration_by_validation_mean_over_seeds_not_by_test():
    runs = [record("a0", "resnet18", 0, 0.80, 0.99), record("a1", "resnet18", 1, 0.60, 0.99),
            record("b0", "resnet50", 0, 0.75, 0.10), record("b1", "resnet50", 1, 0.74, 0.10)]
    run, metric, score = best_run(runs)
    # resnet18 has the best single seed and the best test kappa; resnet50 the best mean.
    assert (run.run_id, metric) == ("b0", "selection_score")
    assert score == pytest.approx(0.745)


def test_a_loss_chooses_the_lowest():
    runs = [record("a", "resnet18", 0, 0.9, 0.5, metric="val_loss"),
            record("b", "resnet50", 0, 0.4, 0.5, metric="val_loss")]
    assert best_run(runs)[0].run_id == "b"


def test_without_validation_nothing_is_chosen_and_failed_runs_never_are():
    """The test set never chooses: runs without a validation split are refused, with why."""
    runs = [record("a", "resnet18", 0, np.nan, 0.5, val=None),
            record("b", "resnet50", 0, np.nan, 0.7),
            record("c", "resnet50", 1, np.nan, 0.99, val=None, status="FAILED")]
    with pytest.raises(ConfigError, match="1 of 2 runs have no validation split.*val_fraction"):
        best_run(runs)
    with pytest.raises(ConfigError, match="No finished run"):
        best_run([runs[2]])


def test_runs_that_selected_by_different_metrics_are_chosen_by_the_validation_kappa():
    """Run b is better on test, run a on validation: a is chosen (it was b before the fix)."""
    a = record("a", "resnet18", 0, 0.2, 0.70, metric="val_loss")
    b = record("b", "resnet50", 0, 0.80, 0.75)
    a.final["val_qwk_selected"], b.final["val_qwk_selected"] = 0.95, 0.80
    run, metric, score = best_run([a, b])
    assert (run.run_id, metric, score) == ("a", "val_qwk_selected", 0.95)


def test_a_run_registers_and_loads_from_the_registry(trained_run, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    from retino.serving.pyfunc import encode_image
    from retino.tracking.records import read_runs

    _, run_id, uri, source, _ = trained_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    version = register_best(read_runs([run_id]), "grader-test")
    assert version.run_id == run_id and version.tags["run_id"] == run_id
    assert MlflowClient(uri).get_registered_model("grader-test").latest_versions
    model = mlflow.pyfunc.load_model(f"models:/grader-test/{version.version}")
    photo = sorted((source / "train").glob("*.jpeg"))[0]
    answer = model.predict(pd.DataFrame({"image": [encode_image(photo)]}))
    assert answer["error"][0] == "" and 0 <= answer["predicted"][0] <= 4


def test_a_loss_never_picks_the_seed_that_has_no_score():
    runs = [record("a0", "resnet18", 0, np.nan, 0.5, metric="val_loss"),
            record("a1", "resnet18", 1, 0.3, 0.5, metric="val_loss")]
    runs[0].final.pop("selection_score")  # a seed that logged no score at all
    assert best_run(runs)[0].run_id == "a1"
