"""Cross-validation: folds by patient, stratified by grade; their configuration checks; and the
study report's pooling of a configuration's folds (out of fold, fold ensemble)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retino.core.errors import ConfigError
from retino.data.layout import SplitIndex
from retino.data.split import patient_folds, with_validation
from retino.evaluation.predictions import ensemble_frame, out_of_fold_frame
from retino.studies.comparison import configurations, run_labels
from retino.studies.folds import cross_validated, pool_folds
from retino.studies.study_report import write_report
from retino.tracking.records import RunRecord
from tests.helpers.runs import validate


def kaggle_like(patients: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """Two eyes per patient (a few with one), grades skewed to 0 as Kaggle's are."""
    rng = np.random.default_rng(seed)
    names, grades = [], []
    for p in range(patients):
        worst = int(rng.choice(5, p=[0.6, 0.1, 0.15, 0.08, 0.07]))
        for eye in ("left", "right")[: 1 if p % 7 == 0 else 2]:
            names.append(f"{p}_{eye}")
            grades.append(max(0, worst - int(rng.integers(0, 2))) if eye == "right" else worst)
    return names, grades


def test_folds_cover_the_training_split_keep_patients_whole_and_balance_grades():
    names, grades = kaggle_like(300)
    fold_of = patient_folds(names, grades, folds=5, seed=3)
    assert sorted(set(fold_of)) == [0, 1, 2, 3, 4]  # every image in exactly one fold
    patients: dict[str, set[int]] = {}
    for name, fold in zip(names, fold_of, strict=True):
        patients.setdefault(name.split("_")[0], set()).add(fold)
    assert all(len(folds) == 1 for folds in patients.values())  # both eyes in one fold
    worst = {p: max(g for n, g in zip(names, grades, strict=True) if n.split("_")[0] == p)
             for p in patients}
    for grade in range(5):  # by worst eye's grade: within one patient's images (two eyes)
        held = Counter(f for n, f in zip(names, fold_of, strict=True)
                       if worst[n.split("_")[0]] == grade)
        counts = [held.get(fold, 0) for fold in range(5)]
        assert max(counts) - min(counts) <= 2, (grade, counts)
    assert patient_folds(names, grades, 5, seed=3) == fold_of  # seeded
    assert patient_folds(names, grades, 5, seed=4) != fold_of


def test_one_image_per_patient_balances_each_grade_within_one_image():
    names = [f"img{i:03d}" for i in range(103)]  # no _left/_right: each its own patient
    grades = [i % 5 for i in range(103)]
    fold_of = patient_folds(names, grades, folds=4, seed=0, patients=names)
    for grade in range(5):
        counts = Counter(f for f, g in zip(fold_of, grades, strict=True) if g == grade)
        assert max(counts.values()) - min(counts.values()) <= 1


def test_fold_k_validates_and_the_test_split_never_moves():
    names, grades = kaggle_like(60)
    train = SplitIndex("train", [Path(f"/i/{n}.jpeg") for n in names], grades)
    test = SplitIndex("test", [Path(f"/i/t{i}_left.jpeg") for i in range(10)], [0] * 10)
    fold_of = patient_folds(names, grades, 3, seed=0)
    seen = []
    for fold in range(3):
        carved = with_validation({"train": train, "test": test}, 0.0, 0, folds=3, fold=fold)
        val = [p.stem for p in carved["val"].paths]
        assert val == [n for n, f in zip(names, fold_of, strict=True) if f == fold]
        assert not set(val) & {p.stem for p in carved["train"].paths}
        assert carved["test"] is test
        seen += val
    assert sorted(seen) == sorted(names)


@pytest.mark.parametrize(("overrides", "message"), [
    (["data.folds=1"], "data.folds=1 must be 2 or more"),
    (["data.folds=5", "data.fold=5"], r"data.fold=5 must be in 0..4"),
])
def test_fold_settings_out_of_range_are_clear_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(overrides)


def test_folds_are_a_validation_split_for_early_stopping():
    validate(["data.val_fraction=0", "data.folds=3", "early_stopping_patience=2"])
    with pytest.raises(ConfigError, match="early_stopping_patience watches"):
        validate(["data.val_fraction=0", "early_stopping_patience=2"])


def frame(images: list[str], grades: list[int], probs: np.ndarray) -> pd.DataFrame:
    data = pd.DataFrame({"image": images, "patient": images, "grade": grades,
                         "predicted": probs.argmax(axis=1)})
    data[[f"p{g}" for g in range(5)]] = probs
    data["p_referable"] = probs[:, 2:].sum(axis=1)
    return data


def fold_runs(folds: int = 3, seed: int = 0) -> tuple[list[RunRecord], list[str]]:
    """Fold runs of one configuration: each validated on its own images, all tested on one set."""
    rng = np.random.default_rng(seed)
    train = [f"tr{i:02d}" for i in range(30)]
    test = [f"te{i:02d}" for i in range(40)]
    true_train = rng.integers(0, 5, 30).tolist()
    true_test = (np.arange(40) % 5).tolist()
    runs = []
    for fold in range(folds):
        mine = [i for i in range(30) if i % folds == fold]
        val = frame([train[i] for i in mine], [true_train[i] for i in mine],
                    rng.dirichlet(np.ones(5), len(mine)))
        tested = frame(test, true_test, rng.dirichlet(np.ones(5), 40))
        params = {"model.name": "resnet18", "data.folds": str(folds), "data.fold": str(fold),
                  "seed": "0", "selection_metric": "val_qwk", "bootstrap_rounds": "20"}
        runs.append(RunRecord(f"run{fold}", "resnet18-scratch-64px", "FINISHED", params, {},
                              {"test_acc": [0.5]},
                              {"val_qwk_selected": 0.5 + fold / 10, "test_acc_selected": 0.4},
                              None, tested.sample(frac=1, random_state=fold), val))
    return runs, train


def test_a_configurations_folds_pool_into_out_of_fold_and_an_ensemble(tmp_path):
    runs, train = fold_runs()
    [config] = cross_validated(configurations(runs, run_labels(runs)))
    pool = pool_folds(config, 0.9, rounds=20)
    # every training image once, answered by the run that validated on it
    assert sorted(pool.out_of_fold["image"]) == train
    for run in runs:
        mine = pool.out_of_fold.set_index("image").loc[run.val["image"]]
        np.testing.assert_allclose(mine[[f"p{g}" for g in range(5)]],
                                   run.val[[f"p{g}" for g in range(5)]])
    # the ensemble: the fold models' mean probabilities, image by image (rows in any order)
    ensemble = pool.ensemble.set_index("image")
    mean = np.mean([run.test.set_index("image").loc[ensemble.index, [f"p{g}" for g in range(5)]]
                    .to_numpy() for run in runs], axis=0)
    np.testing.assert_allclose(ensemble[[f"p{g}" for g in range(5)]], mean)
    assert (ensemble["predicted"] == mean.argmax(axis=1)).all()
    assert pool.selection == ("val_qwk", pytest.approx(0.6), pytest.approx(0.1))
    assert pool.complete and "test_acc_selected_ci_low" in pool.metrics
    # ... and in the study report, with the ensemble's predictions as files
    files = {path.name for path in write_report(runs, tmp_path, "cv")}
    assert {"cross_validation.csv", "cv_resnet18-scratch-64px_ensemble_test.csv",
            "cv_resnet18-scratch-64px_out_of_fold.csv"} <= files
    text = (tmp_path / "results.md").read_text()
    assert "## Cross-validation" in text and "3 of 3" in text
    assert "Fold ensemble of resnet18-scratch-64px: referable DR" in text
    assert "**Best configuration** by its out-of-fold val_qwk: resnet18-scratch-64px" in text


def test_a_missing_fold_is_said_and_regression_outputs_average():
    runs, _ = fold_runs(folds=3)
    [config] = cross_validated(configurations(runs[:2], run_labels(runs[:2])))
    pool = pool_folds(config, 0.9, rounds=0)
    assert not pool.complete and pool.found == [0, 1]
    outputs = [pd.DataFrame({"image": ["a", "b"], "patient": ["a", "b"], "grade": [0, 3],
                             "predicted": [0, 2], "output": [0.2, value]})
               for value in (2.0, 3.0)]
    assert ensemble_frame(outputs)["output"].tolist() == [0.2, 2.5]
    assert out_of_fold_frame(outputs)["output"].tolist() == [0.2, 2.5]  # seeds of one fold


def test_each_fold_is_a_run_of_its_own_identity():
    """Skip and resume key on the config hash: fold k of a configuration is one run, another
    fold (or fold count) another."""
    from retino.jobs.identity import config_hash
    from tests.conftest import compose_config

    hashes = {(folds, fold): config_hash(compose_config([f"data.folds={folds}",
                                                         f"data.fold={fold}"]))
              for folds, fold in ((3, 0), (3, 1), (5, 0))}
    assert len(set(hashes.values())) == 3
    assert config_hash(compose_config(["data.folds=3", "data.fold=1"])) == hashes[3, 1]


def spread_fold_runs(folds: int = 5, seed: int = 0, two_eyes: bool = False) -> list[RunRecord]:
    """Fold runs whose models share the ranking's signal but each add their own noise: the
    ensemble's mean scores are less spread than any one model's (two_eyes: image 2k and 2k+1
    are one patient's)."""
    rng = np.random.default_rng(seed)

    def answers(signal: np.ndarray) -> np.ndarray:
        logit = signal + rng.normal(0, 1.5, len(signal))  # each model its own errors
        p_referable = 1 / (1 + np.exp(-logit))
        return np.stack([1 - p_referable, np.zeros_like(p_referable), p_referable,
                         np.zeros_like(p_referable), np.zeros_like(p_referable)], axis=1)

    def named(images: list[str], grades: list[int], probs: np.ndarray) -> pd.DataFrame:
        data = frame(images, grades, probs)
        if two_eyes:
            data["patient"] = [name[:2] + str(int(name[2:]) // 2) for name in images]
        return data
    truth_train, truth_test = rng.normal(size=1500), rng.normal(size=3000)
    grades_train, grades_test = np.where(truth_train > 0.8, 2, 0), np.where(truth_test > 0.8, 2, 0)
    runs = []
    for fold in range(folds):
        mine = np.arange(1500)[(np.arange(1500) // 2) % folds == fold]  # patients whole
        val = named([f"tr{i}" for i in mine], grades_train[mine].tolist(),
                    answers(2 * truth_train[mine]))
        tested = named([f"te{i}" for i in range(3000)], grades_test.tolist(),
                       answers(2 * truth_test))
        params = {"model.name": "resnet18", "data.folds": str(folds), "data.fold": str(fold),
                  "seed": "0", "selection_metric": "val_qwk", "bootstrap_rounds": "0"}
        runs.append(RunRecord(f"run{fold}", "resnet18-scratch-64px", "FINISHED", params, {},
                              {"test_acc": [0.5]}, {"val_qwk_selected": 0.5}, None, tested, val))
    return runs


def ensemble_sensitivities(seed: int) -> tuple[float, float]:
    """(the fold ensemble's test sensitivity at its point, at the single models' point)."""
    from retino.evaluation.metrics import threshold_for_sensitivity

    runs = spread_fold_runs(seed=seed)
    [config] = cross_validated(configurations(runs, run_labels(runs)))
    pool = pool_folds(config, 0.9, rounds=0)
    referable = pool.ensemble["grade"].to_numpy() >= 2
    single_threshold = threshold_for_sensitivity(pool.out_of_fold["grade"],
                                                 pool.out_of_fold["p_referable"], 0.9)
    naive = (pool.ensemble["p_referable"].to_numpy()[referable] >= single_threshold).mean()
    return pool.metrics["test_referable_sensitivity_at_target_selected"], naive


def test_a_fold_ensembles_operating_point_holds_for_the_ensemble():
    """The threshold chosen on single models' out-of-fold scores, applied to the mean of five
    models (less spread), gave a test sensitivity far above its 0.9 target (the defect: 0.96 in
    the review); carried to the ensemble's scale, the ensemble meets its target on average
    (one set's choice varies by a few points, as any validation set's does)."""
    ours, naive = zip(*(ensemble_sensitivities(seed) for seed in range(4)), strict=True)
    assert np.mean(naive) > 0.95
    assert abs(np.mean(ours) - 0.9) < 0.03


def test_a_fold_ensembles_patient_point_is_chosen_within_one_simulated_ensemble():
    """The simulated ensembles repeat each out-of-fold image: taking a patient's worse eye over
    all of them chose the highest of fifty draws, and the ensemble's per-patient sensitivity
    fell to 0.42 against its 0.9 target."""
    runs = spread_fold_runs(two_eyes=True)
    [config] = cross_validated(configurations(runs, run_labels(runs)))
    pool = pool_folds(config, 0.9, rounds=0)
    from retino.evaluation.screening import screening_report

    report = screening_report(pool.ensemble, pool.choosing, 0.9, 0.9)
    sensitivity = report.by_patient.rates["sensitivity target"]["sensitivity"].value
    assert sensitivity > 0.8
    assert pool.choosing["patient"].nunique() == pool.choosing["image"].nunique() / 2


def test_one_fold_model_is_its_own_ensemble():
    from retino.evaluation.predictions import on_ensemble_scale

    [run] = spread_fold_runs(folds=1)
    assert on_ensemble_scale(run.val, [run.test]) is run.val
