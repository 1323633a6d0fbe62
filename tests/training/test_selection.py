"""Choosing the epoch without the test set: the validation split, the selected epoch and its
weights, and the predictions the headline metrics come from."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from retino.core.errors import DataError
from retino.data.layout import SplitIndex, patient_of
from retino.data.split import with_validation
from retino.evaluation.predictions import frame_metrics
from retino.training.pipeline import train_and_evaluate
from retino.training.selection import Selection
from tests.conftest import TINY, compose_config


def patients_index(patients=200, seed=0):
    """Both eyes of each patient, Kaggle-like names, grades with the rarer ones present."""
    rng = np.random.default_rng(seed)
    paths, grades = [], []
    for patient in range(patients):
        worst = int(rng.choice(5, p=[0.6, 0.1, 0.15, 0.08, 0.07]))
        for eye in ("left", "right"):
            paths.append(Path(f"/x/{patient}_{eye}.jpeg"))
            grades.append(worst if eye == "left" else int(rng.integers(0, worst + 1)))
    train = SplitIndex("train", paths, grades)
    test = SplitIndex("test", [Path("/x/9999_left.jpeg")], [0])
    return {"train": train, "test": test}


def worst_grade_shares(split):
    worst = {}
    for path, grade in zip(split.paths, split.grades, strict=True):
        patient = patient_of(path.stem)
        worst[patient] = max(worst.get(patient, 0), grade)
    return np.bincount(list(worst.values()), minlength=5) / len(worst)


def test_validation_is_carved_by_patient_stratified_and_seeded():
    index = patients_index()
    split = with_validation(index, 0.2, seed=3)
    train_patients = {patient_of(p.stem) for p in split["train"].paths}
    val_patients = {patient_of(p.stem) for p in split["val"].paths}
    assert not train_patients & val_patients  # both eyes of a patient on one side
    assert len(split["train"]) + len(split["val"]) == len(index["train"])
    assert len(split["val"]) / len(index["train"]) == pytest.approx(0.2, abs=0.03)
    share = [worst_grade_shares(split[side]) for side in ("train", "val")]
    assert np.abs(share[0] - share[1]).max() < 0.04  # stratified by the patient's worst grade
    assert split["test"] is index["test"]
    again = with_validation(index, 0.2, seed=3)
    assert again["val"].paths == split["val"].paths  # seeded
    assert with_validation(index, 0.2, seed=4)["val"].paths != split["val"].paths
    assert with_validation(index, 0, seed=3) == index  # the lab's protocol: no validation split


def test_a_validation_split_too_small_to_hold_an_image_says_so():
    index = patients_index(patients=2)
    with pytest.raises(DataError, match="data.val_fraction=0.05 of the 4 training images"):
        with_validation(index, 0.05, seed=0)


def test_the_run_keeps_the_best_validation_epoch_and_reports_the_test_set_there(tmp_path):
    cfg = compose_config(TINY + [f"data.root={tmp_path / 'demo'}", "epochs=3",
                                 "data.train_size=40", "data.val_fraction=0.25",
                                 "selection_metric=val_loss", "deterministic=true",
                                 "seed=6", "resolution.size=64"])
    # (a seed whose best validation epoch is not the last, at 64 px)
    result = train_and_evaluate(cfg, tmp_path / "run")
    val_losses = [row["val_loss"] for row in result.history]
    chosen = result.selected
    selected = int(chosen["selected_epoch"])
    assert selected == 1 + int(np.argmin(val_losses)) and selected < 3  # here: epoch 2 of 3
    assert chosen["selection_score"] == min(val_losses)
    # The logged weights are the selected epoch's: the test set scores as it did at that epoch,
    # and not as the last epoch's weights (kept in last.pt) would.
    at_selection = result.history[selected - 1]
    assert chosen["test_acc_selected"] == at_selection["test_acc"]
    assert chosen["test_loss_selected"] == pytest.approx(at_selection["test_loss"], rel=1e-5)
    saved = torch.load(tmp_path / "run" / "model_state.pt", weights_only=True)
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    assert not torch.equal(saved["fc.weight"], last["fc.weight"])
    # ... and the headline metrics are those of the predictions files written with them.
    test = pd.read_csv(tmp_path / "run" / "predictions_test.csv")
    val = pd.read_csv(tmp_path / "run" / "predictions_val.csv")
    assert len(test) == 10 and len(val) > 0
    assert list(test.columns[:4]) == ["image", "patient", "grade", "predicted"]
    assert np.allclose(test[[f"p{g}" for g in range(5)]].sum(axis=1), 1, atol=1e-5)
    from_file = frame_metrics(test, "test_")
    for key in ("test_acc", "test_qwk", "test_loss", "test_referable_auc"):
        assert chosen[f"{key}_selected"] == pytest.approx(from_file[key], nan_ok=True), key
    assert chosen["val_qwk_selected"] == pytest.approx(frame_metrics(val, "val_")["val_qwk"])
    assert {"test_referable_sensitivity_at_target_selected",
            "test_referable_threshold_selected"} <= chosen.keys()
    assert result.confusion.sum() == 10


def test_a_checkpoint_whose_epoch_is_the_selected_one_holds_its_weights_once(tmp_path):
    """An epoch better than every one before wrote its weights twice into last.pt, as the
    model's and as the selected epoch's: with AdamW, 179 MB where 134 MB hold it all."""
    train_and_evaluate(compose_config(TINY + [f"data.root={tmp_path / 'demo'}"]), tmp_path / "run")
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["selection"]["epoch"] == state["epoch"] == 1
    for name, tensor in state["model"].items():  # one storage each: written once
        selected = state["selected_model"][name]
        assert selected.untyped_storage().data_ptr() == tensor.untyped_storage().data_ptr(), name


def test_without_a_validation_split_the_last_epoch_is_kept(tmp_path):
    cfg = compose_config(TINY + [f"data.root={tmp_path / 'demo'}", "epochs=2",
                                 "data.val_fraction=0"])
    result = train_and_evaluate(cfg, tmp_path / "run")
    assert result.selection is None and result.selected["selected_epoch"] == 2
    assert result.selected["selection_score"] == result.history[-1]["test_acc"]
    assert "val_loss" not in result.history[-1]
    assert not (tmp_path / "run" / "predictions_val.csv").exists()
    assert "test_referable_threshold_selected" not in result.selected  # test never chooses it


def row(epoch, **values):
    return {"epoch": epoch, **values}


@pytest.mark.parametrize("metric, scores, chosen", [
    ("val_qwk", [0.2, 0.5, 0.5, 0.4], 2),  # highest; a tie keeps the earlier epoch
    ("val_loss", [1.0, 0.7, 0.9], 2),  # a loss: lowest
    ("val_referable_auc", [float("nan"), 0.6, float("nan"), 0.55], 2),  # nan never wins ...
    ("val_referable_auc", [float("nan"), float("nan")], 1),  # ... but something is kept
])
def test_selection_follows_the_best_epoch_by_its_metric(metric, scores, chosen):
    selection = Selection(metric)
    model = torch.nn.Linear(2, 1)
    for epoch, score in enumerate(scores, start=1):
        with torch.no_grad():
            model.weight.fill_(epoch)  # weights that say which epoch they are from
        selection.update(row(epoch, **{metric: score}), model)
    assert selection.epoch == chosen
    assert (selection.weights["weight"] == chosen).all()  # a copy, not the live tensor


def test_early_stopping_counts_from_the_best_epoch():
    selection = Selection("val_qwk")
    model = torch.nn.Linear(1, 1)
    for epoch, score in enumerate([0.5, 0.6, 0.55, 0.58, 0.59], start=1):
        selection.update(row(epoch, val_qwk=score), model)
    assert selection.epoch == 2
    assert not selection.stale(4, patience=3) and selection.stale(5, patience=3)
    assert not selection.stale(5, patience=None)  # off
    restored = Selection("val_qwk", epoch=2, score=0.6)  # as a resumed run restores it
    assert restored.stale(5, patience=3)  # the count did not restart


def test_a_run_stops_early_and_its_resume_trains_no_further(tmp_path):
    """A frozen backbone at a vanishing learning rate: the validation accuracy never improves
    after epoch 1, so patience 1 stops the run after epoch 2 of 5; resuming it trains nothing."""
    overrides = TINY + [f"data.root={tmp_path / 'demo'}", "epochs=5", "freeze=backbone",
                        "lr=1e-9", "selection_metric=val_acc", "early_stopping_patience=1",
                        "data.val_fraction=0.3"]
    cfg = compose_config(overrides)
    result = train_and_evaluate(cfg, tmp_path / "run")
    assert (result.stopped_epoch, len(result.history)) == (2, 2)
    assert result.selected["selected_epoch"] == 1
    again = train_and_evaluate(cfg, tmp_path / "run", resume=True)
    assert (again.stopped_epoch, len(again.history)) == (2, 2)


def test_early_stopping_needs_a_validation_split():
    from retino.config.validation import validate_config
    from retino.core.errors import ConfigError
    from retino.training.optimization import registered_choices

    cfg = compose_config(TINY + ["early_stopping_patience=2", "data.val_fraction=0"])
    with pytest.raises(ConfigError, match="data.val_fraction > 0"):
        validate_config(cfg, registered_choices())
