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
    at_threshold,
    grading_metrics,
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


def headline_metrics(test: pd.DataFrame, val: pd.DataFrame | None,
                     sensitivity_target: float) -> dict[str, float]:
    """The selected epoch's metrics, keyed `<name>_selected`: test (and validation) metrics, and
    referable sensitivity / specificity at the operating point chosen on validation to reach
    sensitivity_target (none without a validation split: the test set never chooses it)."""
    metrics = frame_metrics(test, "test_")
    if val is not None:
        metrics |= frame_metrics(val, "val_")
        threshold = threshold_for_sensitivity(val["grade"].to_numpy(),
                                              val[PROBABILITY_COLUMNS].to_numpy(),
                                              sensitivity_target)
        for frame, prefix in ((test, "test_"), (val, "val_")):
            metrics |= at_threshold(frame["grade"].to_numpy(),
                                    frame[PROBABILITY_COLUMNS].to_numpy(), threshold, prefix)
    return {f"{key}_selected": value for key, value in metrics.items()}
