"""Every metric's name, defined once: the MLflow key of each number a run logs (split, measure,
the kept epoch, an interval's bound) and, for the screening numbers, which photographs a rate is
computed on, so that the run's page, the study's tables and `mlflow ui` say the same thing under
the same name. A test fails when a metric's name is spelt out anywhere else in retino/.

Keys: `<split>_<measure>` per epoch (`train_loss`, `test_acc`, `val_qwk`: `step` = the epoch),
`<split>_<measure>_selected` at the kept epoch (logged once), `..._selected_ci_low` /
`_ci_high` its 95 % interval.

A sensitivity depends on which photographs it counts. Where quality was assessed, three:
- "all photographs": every photograph scored as if it were gradable;
- "gradable photographs": the gradable ones only (a patient with a photograph not gradable is
  left out of the per-patient rows, never a true negative by omission);
- "not gradable = refer": every photograph, those not gradable counted as referred (as the
  IDx-DR trial counted them).
Where quality was not assessed, only "all photographs".

Keys: `test_[gradable_]?[patient_]?referable_<rate>_<point>[_ungradable_refer]_selected[_ci_low
|_ci_high]`; "all photographs" per image at the sensitivity target is the run's headline
(`test_referable_sensitivity_at_target_selected`). Renaming any of these breaks the comparison
of runs logged before.
"""

from __future__ import annotations


def metric_key(measure: str, split: str = "test") -> str:
    """A measure of a split, per epoch: test_acc, val_qwk, train_loss, oof_referable_auc."""
    return f"{split}_{measure}"


def selected(key: str) -> str:
    """A metric at the kept epoch (the one selection_metric chose on validation)."""
    return f"{key}_selected"


def interval(key: str, bound: str) -> str:
    """An end of a metric's 95 % interval: bound low or high."""
    return f"{key}_ci_{bound}"


TRAIN_LOSS, TRAIN_ACC = metric_key("loss", "train"), metric_key("acc", "train")
TEST_LOSS, TEST_ACC, TEST_QWK = (metric_key(m) for m in ("loss", "acc", "qwk"))
TEST_REFERABLE_AUC = metric_key("referable_auc")
TEST_MAJORITY_BASELINE = metric_key("majority_baseline")  # predicting the commonest grade
TEST_REFERABLE_PATIENTS = metric_key("referable_patients")  # patients with a referable eye
VAL_LOSS, VAL_ACC, VAL_QWK, VAL_MACRO_F1, VAL_REFERABLE_AUC = (
    metric_key(m, "val") for m in ("loss", "acc", "qwk", "macro_f1", "referable_auc"))
SELECTED_EPOCH = "selected_epoch"
SELECTION_SCORE = "selection_score"  # what a job returns to Hydra: never a test metric


def recall_key(grade: int, split: str = "test") -> str:
    """The recall of one grade: test_recall_grade2."""
    return metric_key(f"recall_grade{grade}", split)


ALL_PHOTOGRAPHS = "all photographs"
GRADABLE_PHOTOGRAPHS = "gradable photographs"
UNGRADABLE_REFERRED = "not gradable = refer"
POPULATIONS = (GRADABLE_PHOTOGRAPHS, ALL_PHOTOGRAPHS, UNGRADABLE_REFERRED)  # the report's order

_PREFIX = {ALL_PHOTOGRAPHS: "", GRADABLE_PHOTOGRAPHS: "gradable_", UNGRADABLE_REFERRED: ""}
_SUFFIX = {ALL_PHOTOGRAPHS: "", GRADABLE_PHOTOGRAPHS: "", UNGRADABLE_REFERRED: "_ungradable_refer"}
LEVELS = ("image", "patient")


def population_key(measure: str, population: str = ALL_PHOTOGRAPHS, split: str = "test") -> str:
    """The metric key of a measure of these photographs that is not a rate at a point
    (calibration: referable_brier, grade_ece, ...)."""
    if population not in _PREFIX:
        raise ValueError(f"no screening population {population!r}")
    return selected(f"{split}_{_PREFIX[population]}{measure}{_SUFFIX[population]}")


def screening_key(measure: str, population: str = ALL_PHOTOGRAPHS, level: str = "image",
                  point: str = "", bound: str = "", split: str = "test") -> str:
    """The metric key of a screening number at the selected epoch: `measure` a rate
    (sensitivity, specificity, ppv, npv), auc or prevalence; `point` the operating point's
    suffix (at_target, at_spec_target, at_predicted_grade) for a rate; `bound` low or high for
    an interval's ends."""
    if population not in _PREFIX or level not in LEVELS:
        raise ValueError(f"no screening population {population!r} or level {level!r}")
    where = _PREFIX[population] + ("patient_" if level == "patient" else "")
    at = f"_{point}" if point else ""
    key = selected(f"{split}_{where}referable_{measure}{at}{_SUFFIX[population]}")
    return interval(key, bound) if bound else key


def imageability_key(bound: str = "", split: str = "test") -> str:
    """The share of photographs gradable, and its interval's ends."""
    key = selected(metric_key("imageability", split))
    return interval(key, bound) if bound else key
