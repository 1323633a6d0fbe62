"""A cross-validated configuration's fold ensemble as one MLflow model: its engine averages the
fold models, its pyfunc holds every fold's weights and the out-of-fold operating point, and a
study registers it, chosen by the out-of-fold value of its selection metric."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from retino.core.grades import PROBABILITY_COLUMNS
from retino.core.names import (
    CONFIG_FILE,
    CONFIG_NAME_TAG,
    ENSEMBLE_MODEL_DIR,
    PARENT_TAG,
    WEIGHTS_FILE,
)
from retino.core.names import predictions_file as predictions
from retino.evaluation.metrics import referable_scores, threshold_for_sensitivity
from retino.evaluation.predictions import gradable_rows, out_of_fold_frame, read_predictions
from retino.serving.grader import (
    ensemble_engine,
    grade,
    pytorch_engine,
    run_from_folder,
    trained_model,
)
from retino.serving.pyfunc import encode_image, save_ensemble_grader
from retino.studies.comparison import best_run
from retino.studies.folds import best_fold_ensemble
from retino.tracking.records import RunRecord

CPU = torch.device("cpu")


def fold_folders(trained_run, folder: Path) -> list[Path]:
    """Two fold runs made from the session's run: fold 0 its copy, fold 1 with other weights and
    other validation images (its own fold, answered differently); both with test-time flips."""
    folders = []
    for fold in range(2):
        target = shutil.copytree(trained_run[0], folder / f"fold{fold}",
                                 ignore=shutil.ignore_patterns("model", "last.pt", "*.png"))
        cfg = OmegaConf.load(target / CONFIG_FILE)
        cfg.data.folds, cfg.data.fold, cfg.tta = 2, fold, "flips"
        OmegaConf.save(cfg, target / CONFIG_FILE)
        folders.append(target)
    weights = torch.load(folders[1] / WEIGHTS_FILE, weights_only=True)
    generator = torch.Generator().manual_seed(1)
    torch.save({k: v + 0.05 * torch.randn(v.shape, generator=generator) if v.is_floating_point()
                else v for k, v in weights.items()}, folders[1] / WEIGHTS_FILE)
    val = read_predictions(folders[1] / predictions("val"))
    flipped = val.assign(image=val["image"] + "_b", p0=val["p4"], p4=val["p0"],
                         p_referable=1 - val["p4"] - val["p1"])
    flipped.to_csv(folders[1] / predictions("val"), index=False)
    return folders


def test_the_ensemble_engine_answers_with_the_mean_of_its_fold_models(trained_run, tmp_path):
    members = [run_from_folder(folder) for folder in fold_folders(trained_run, tmp_path)]
    images = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():  # as grade() runs an engine
        each = [pytorch_engine(trained_model(run, CPU), run, CPU)(images) for run in members]
        together = ensemble_engine(members, CPU)(images)
    assert not np.allclose(each[0], each[1], atol=1e-4)  # two different models
    np.testing.assert_allclose(together, np.mean(each, axis=0), atol=1e-6)


def test_an_ensemble_model_grades_with_its_fold_models_mean_at_the_out_of_fold_point(
        trained_run, tmp_path):
    folders = fold_folders(trained_run, tmp_path)
    members = [replace(run_from_folder(folder), source=f"run{k}")
               for k, folder in enumerate(folders)]
    out_of_fold = out_of_fold_frame([read_predictions(f / predictions("val")) for f in folders])
    saved = save_ensemble_grader(members, out_of_fold, tmp_path / "build")
    model = mlflow.pyfunc.load_model(str(saved))
    photos = sorted((trained_run[3] / "train").glob("*.jpeg"))[:4]
    answers = model.predict(pd.DataFrame({"image": [encode_image(p) for p in photos]}))
    mean = np.mean([grade(run, photos, CPU)[PROBABILITY_COLUMNS].to_numpy(float)
                    for run in members], axis=0)
    np.testing.assert_allclose(answers[PROBABILITY_COLUMNS].to_numpy(float), mean, atol=1e-5)
    # the operating point: chosen on the out-of-fold predictions, not on one fold's
    chooses = gradable_rows(out_of_fold)
    threshold = threshold_for_sensitivity(chooses["grade"].to_numpy(), referable_scores(chooses),
                                          members[0].cfg.referable_sensitivity_target)
    grader = model.unwrap_python_model()
    assert grader.run.threshold == pytest.approx(threshold)
    assert threshold != pytest.approx(members[0].threshold)  # the first fold's own differs
    assert (answers["referable"] == (answers["p_referable"] >= threshold).astype(int)).all()
    assert OmegaConf.load(saved / "artifacts" / "grader.yaml").members == ["run0", "run1"]
    assert model.metadata.get_output_schema().input_names() == \
        mlflow.pyfunc.load_model(str(trained_run[0] / "model")).metadata \
        .get_output_schema().input_names()  # the single run model's columns


def cv_runs(model: str, scores: list[float], right: float, folds: int = 2,
            metric: str = "val_qwk") -> list[RunRecord]:
    """Fold runs of one configuration: each fold's logged selection score as given; `right`
    the share of validation images its models grade right (the out-of-fold kappa follows it)."""
    rng = np.random.default_rng(len(model) + int(100 * right))
    runs = []
    for fold, score in enumerate(scores):
        images = [f"tr{fold}_{i}" for i in range(40)]
        grades = np.arange(40) % 5
        guess = np.where(rng.random(40) < right, grades, rng.integers(0, 5, 40))
        val = frame(images, grades, guess)
        params = {"model.name": model, "data.folds": str(folds), "data.fold": str(fold),
                  "seed": "0", "selection_metric": metric}
        runs.append(RunRecord(f"{model}-{fold}", f"{model}-scratch-64px", "FINISHED", params,
                              {}, {}, {"selection_score": score}, None,
                              frame([f"te{i}" for i in range(20)], np.arange(20) % 5,
                                    np.arange(20) % 5), val))
    return runs


def frame(images: list[str], grades: np.ndarray, guess: np.ndarray) -> pd.DataFrame:
    probs = np.full((len(images), 5), 0.05)
    probs[np.arange(len(images)), guess] = 0.8
    data = pd.DataFrame({"image": images, "patient": images, "grade": grades, "predicted": guess})
    data[PROBABILITY_COLUMNS] = probs
    data["p_referable"] = probs[:, 2:].sum(axis=1)
    return data


@pytest.mark.parametrize("metric", ["val_qwk", "val_loss"])
def test_the_ensemble_is_chosen_by_the_out_of_fold_metric_not_the_mean_over_folds(metric):
    """resnet18's folds logged the better selection scores, resnet50's models grade their
    folds' images better: out of fold, resnet50 wins (the mean over folds picked resnet18). A
    configuration missing a fold never competes, however good."""
    low = metric.endswith("loss")
    runs = [*cv_runs("resnet18", [0.2, 0.2] if low else [0.9, 0.9], right=0.3, metric=metric),
            *cv_runs("resnet50", [0.9, 0.9] if low else [0.2, 0.2], right=0.8, metric=metric),
            *cv_runs("resnet101", [0.1] if low else [0.99], right=1.0, metric=metric)]
    assert best_run(runs)[0].params["model.name"] != "resnet50"  # the mean over folds
    choice = best_fold_ensemble(runs)
    assert choice.pool.label == "resnet50-scratch-64px"
    assert [run.run_id for run in choice.runs] == ["resnet50-0", "resnet50-1"]
    assert choice.metric == metric
    assert choice.score == pytest.approx(choice.pool.metrics[f"{metric}_selected"])
    assert best_fold_ensemble(runs[4:]) is None  # only an incomplete one: no ensemble
    assert best_fold_ensemble([replace(r, params={k: v for k, v in r.params.items()
                                                  if not k.startswith("data.fold")})
                               for r in runs]) is None  # not cross-validated


def log_fold_study(trained_run, folders: list[Path], artifacts: Path) -> str:
    """A study of two fold runs in the test's own store, logged as a sweep logs them (params,
    config, weights, predictions, the first model's input example); its parent run's id."""
    client = mlflow.MlflowClient()
    params = mlflow.MlflowClient(trained_run[2]).get_run(trained_run[1]).data.params
    experiment = client.create_experiment("retino", artifacts.as_uri())
    parent = client.create_run(experiment, run_name="cross_validation").info.run_id
    for fold, folder in enumerate(folders):
        run = client.create_run(experiment, run_name=f"resnet18 fold={fold}", tags={
            PARENT_TAG: parent, CONFIG_NAME_TAG: "resnet18-scratch-64px"}).info.run_id
        for key, value in {**params, "data.folds": "2", "data.fold": str(fold)}.items():
            client.log_param(run, key, value)
        for name in (CONFIG_FILE, WEIGHTS_FILE, predictions("val"), predictions("test")):
            client.log_artifact(run, str(folder / name))
        client.log_artifact(run, str(trained_run[0] / "model" / "input_example.json"), "model")
        client.set_terminated(run, "FINISHED")
    return parent


def test_a_cross_validated_study_registers_its_fold_ensemble_as_one_model(trained_run,
                                                                          tmp_path):
    from retino.studies.model_registry import register_best
    from retino.tracking.records import read_runs

    folders = fold_folders(trained_run, tmp_path)
    parent = log_fold_study(trained_run, folders, tmp_path / "mlruns")
    runs = read_runs(parent_id=parent)
    version = register_best(runs, "ensemble-test", parent)
    client = mlflow.MlflowClient()
    assert version.source == f"{client.get_run(parent).info.artifact_uri}/{ENSEMBLE_MODEL_DIR}"
    assert version.run_id == parent
    assert version.tags["members"] == ",".join(run.run_id for run in runs)
    assert version.tags["selected_by"] == "out-of-fold val_qwk"
    model = mlflow.pyfunc.load_model("models:/ensemble-test/1")
    photo = sorted((trained_run[3] / "train").glob("*.jpeg"))[0]
    answer = model.predict(pd.DataFrame({"image": [encode_image(photo)]}))
    mean = np.mean([grade(run_from_folder(f), [photo], CPU)[PROBABILITY_COLUMNS].to_numpy(float)
                    for f in folders], axis=0)
    np.testing.assert_allclose(answer[PROBABILITY_COLUMNS].to_numpy(float), mean, atol=1e-5)
    assert model.metadata.get_input_schema().input_names() == ["image"]
    again = register_best(runs, "ensemble-test", parent)  # its files never move under version 1
    assert again.source.endswith(f"{ENSEMBLE_MODEL_DIR}-2") and int(again.version) == 2
