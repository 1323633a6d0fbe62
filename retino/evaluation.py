"""What a trained run is judged on: its per-image predictions at the selected epoch (the source
of truth that reports are computed from) and the headline metrics derived from them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss

from retino.data.split import patient_of
from retino.metrics import (
    GRADES,
    REFERABLE_GRADE,
    at_threshold,
    grading_metrics,
    quadratic_weighted_kappa,
    referable_auc,
    referable_probability,
    threshold_for_sensitivity,
)

PROBABILITY_COLUMNS = [f"p{grade}" for grade in GRADES]


def predictions_frame(paths: Sequence[Path], true: np.ndarray,
                      probs: np.ndarray) -> pd.DataFrame:
    """One row per image: image, patient, true grade, predicted grade, the five probabilities
    and P(referable DR)."""
    names = [Path(path).stem for path in paths]
    frame = pd.DataFrame({"image": names, "patient": [patient_of(name) for name in names],
                          "grade": np.asarray(true, int), "predicted": probs.argmax(axis=1)})
    frame[PROBABILITY_COLUMNS] = probs
    frame["p_referable"] = referable_probability(probs)
    return frame


def frame_metrics(frame: pd.DataFrame, prefix: str) -> dict[str, float]:
    """Loss, grading and referable-DR metrics of a predictions frame."""
    probs = frame[PROBABILITY_COLUMNS].to_numpy()
    probs = probs / probs.sum(axis=1, keepdims=True)  # as read back from a CSV: off by 1e-9
    loss = log_loss(frame["grade"], probs, labels=GRADES)
    return {f"{prefix}loss": float(loss),
            **grading_metrics(frame["grade"].to_numpy(), frame["predicted"].to_numpy(), prefix,
                              probs)}


def _interval_statistics(true: np.ndarray, pred: np.ndarray,
                         score: np.ndarray) -> dict[str, float]:
    """The metrics given intervals: accuracy, quadratic weighted kappa, referable-DR AUC."""
    return {"acc": float(np.mean(true == pred)), "qwk": quadratic_weighted_kappa(true, pred),
            "referable_auc": referable_auc(true >= REFERABLE_GRADE, score)}


def patient_rows(frame: pd.DataFrame) -> list[np.ndarray]:
    """Row numbers of each patient's images (both eyes together)."""
    codes, uniques = pd.factorize(frame["patient"])
    order = np.argsort(codes, kind="stable")
    return np.split(order, np.cumsum(np.bincount(codes, minlength=len(uniques)))[:-1])


def bootstrap_intervals(frame: pd.DataFrame, prefix: str, rounds: int, seed: int = 0,
                        level: float = 0.95) -> dict[str, float]:
    """Percentile intervals of accuracy, kappa and referable AUC over `rounds` resamples of the
    patients with replacement (a patient's eyes are not independent images), seeded:
    `<prefix><metric>_ci_low` and `_ci_high`."""
    groups = patient_rows(frame)
    true, pred = frame["grade"].to_numpy(), frame["predicted"].to_numpy()
    score = frame["p_referable"].to_numpy()
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {}
    for _ in range(rounds):
        rows = np.concatenate([groups[i] for i in rng.integers(0, len(groups), len(groups))])
        for name, value in _interval_statistics(true[rows], pred[rows], score[rows]).items():
            samples.setdefault(name, []).append(value)
    tails = (100 * (1 - level) / 2, 100 * (1 + level) / 2)
    intervals = {}
    for name, values in samples.items():
        low, high = (np.nanpercentile(values, tails) if not np.all(np.isnan(values))
                     else (np.nan, np.nan))
        intervals |= {f"{prefix}{name}_ci_low": float(low), f"{prefix}{name}_ci_high": float(high)}
    return intervals


def headline_metrics(test: pd.DataFrame, val: pd.DataFrame | None,
                     sensitivity_target: float, bootstrap_rounds: int = 0) -> dict[str, float]:
    """The selected epoch's metrics, keyed `<name>_selected`: test (and validation) metrics, and
    referable sensitivity / specificity at the operating point chosen on validation to reach
    sensitivity_target (none without a validation split: the test set never chooses it); with
    bootstrap_rounds, 95 % intervals of the test accuracy, kappa and referable AUC."""
    metrics = frame_metrics(test, "test_")
    if val is not None:
        metrics |= frame_metrics(val, "val_")
        threshold = threshold_for_sensitivity(val["grade"].to_numpy(),
                                              val[PROBABILITY_COLUMNS].to_numpy(),
                                              sensitivity_target)
        for frame, prefix in ((test, "test_"), (val, "val_")):
            metrics |= at_threshold(frame["grade"].to_numpy(),
                                    frame[PROBABILITY_COLUMNS].to_numpy(), threshold, prefix)
    selected = {f"{key}_selected": value for key, value in metrics.items()}
    if bootstrap_rounds:  # test_acc_selected_ci_low, test_acc_selected_ci_high, ...
        intervals = bootstrap_intervals(test, "test_", bootstrap_rounds)
        selected |= {key.replace("_ci_", "_selected_ci_"): value
                     for key, value in intervals.items()}
    return selected
