"""What a trained run is judged on: its per-image predictions at the selected epoch (the source
of truth that reports are computed from) and the headline metrics derived from them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss

from retino.core.grades import (
    GRADE_COLUMN,
    GRADES,
    IMAGE_COLUMN,
    OUTPUT_COLUMN,
    PATIENT_COLUMN,
    PREDICTED_COLUMN,
    PROBABILITY_COLUMNS,
    REFERABLE_GRADE,
    REFERABLE_PROBABILITY_COLUMN,
)
from retino.data.layout import patient_of
from retino.evaluation.cut_points import fit_cut_points, grades_from_outputs
from retino.evaluation.intervals import run_intervals
from retino.evaluation.metrics import (
    at_threshold,
    grading_metrics,
    referable_column,
    referable_probability,
    referable_scores,
    threshold_for_sensitivity,
)


def predictions_frame(paths: Sequence[Path], true: np.ndarray, answers: np.ndarray,
                      patients: Sequence[str] | None = None,
                      not_gradable: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per image: image, patient (given, else read from the name), true grade,
    predicted grade, and the model's answers: the five probabilities and P(referable DR), or a
    regression head's output (answers (N,) or (N, 1); predicted by rounding until
    with_cut_points cuts it); where the set's quality was assessed, gradable and quality_reason
    (why not)."""
    names = [Path(path).stem for path in paths]
    patients = list(patients) if patients else [patient_of(name) for name in names]
    frame = _with_answers(pd.DataFrame({IMAGE_COLUMN: names, PATIENT_COLUMN: patients,
                                        GRADE_COLUMN: np.asarray(true, int)}), answers)
    if not_gradable is not None:
        frame["gradable"] = [not why for why in not_gradable]
        frame["quality_reason"] = list(not_gradable)
    return frame


def is_regression_frame(frame: pd.DataFrame) -> bool:
    """Whether a predictions frame holds a regression head's outputs (no probabilities)."""
    return OUTPUT_COLUMN in frame and REFERABLE_PROBABILITY_COLUMN not in frame


def with_cut_points(frames: dict[str, pd.DataFrame]) -> tuple[dict[str, pd.DataFrame],
                                                               np.ndarray | None]:
    """A regression run's frames with their grades cut at the points fitted on the validation
    frame for kappa (all its images, as each epoch's selection fitted them), and those points;
    the frames unchanged (and None) for a head with probabilities or without a validation
    split, whose regression grades stay rounded."""
    val = frames.get("val")
    if val is None or not is_regression_frame(val):
        return frames, None
    cuts = fit_cut_points(val[GRADE_COLUMN].to_numpy(), val[OUTPUT_COLUMN].to_numpy())
    cut = {split: frame.assign(predicted=grades_from_outputs(frame[OUTPUT_COLUMN], cuts))
           for split, frame in frames.items()}
    return cut, cuts


def answer_columns(frame: pd.DataFrame) -> list[str]:
    """The columns holding the model's answers: a regression head's output, else p0..p4."""
    return [OUTPUT_COLUMN] if is_regression_frame(frame) else list(PROBABILITY_COLUMNS)


def predicted_grades(answers: np.ndarray) -> np.ndarray:
    """(N,) grades of a model's answers: the likeliest of (N, 5) probabilities, or a regression
    head's output (N,) / (N, 1) rounded (with_cut_points cuts it at fitted points)."""
    answers = np.asarray(answers, float)
    if answers.ndim == 1 or answers.shape[1] == 1:
        return grades_from_outputs(answers.reshape(-1))
    return answers.argmax(axis=1)


def _with_answers(frame: pd.DataFrame, answers: np.ndarray) -> pd.DataFrame:
    """The frame's images with these answers (N, 5) probabilities, or a regression head's
    output (N,) / (N, 1), and the grade predicted and P(referable) derived from them (a
    regression head's grades rounded: with_cut_points cuts them)."""
    frame = frame.copy()
    answers = np.asarray(answers, float)
    frame[PREDICTED_COLUMN] = predicted_grades(answers)
    if answers.ndim == 1 or answers.shape[1] == 1:
        frame[OUTPUT_COLUMN] = answers.reshape(-1)
        return frame
    frame[PROBABILITY_COLUMNS] = answers
    frame[REFERABLE_PROBABILITY_COLUMN] = referable_probability(answers)
    return frame


def ensemble_frame(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The predictions of an ensemble of models scored on the same images (frames aligned by
    image, as intervals.same_images aligns them): the mean of their answers (probabilities, or
    regression outputs), its predicted grade and P(referable)."""
    columns = answer_columns(frames[0])
    answers = np.mean([frame[columns].to_numpy(float) for frame in frames], axis=0)
    return _with_answers(frames[0], answers)


def out_of_fold_frame(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Cross-validation's validation frames as one: every training image once, answered by the
    model(s) that did not train on it (several seeds of a fold: their mean answers)."""
    joined = pd.concat(frames, ignore_index=True)
    columns = answer_columns(joined)
    answers = joined.groupby(IMAGE_COLUMN, sort=False)[columns].mean()
    first = (joined.drop_duplicates(IMAGE_COLUMN).set_index(IMAGE_COLUMN).loc[answers.index]
             .reset_index())
    return _with_answers(first, answers.to_numpy(float))


# Simulated ensembles per out-of-fold image, a threshold's tail being thin: 50, fewer for a
# large set (about ENSEMBLE_ROWS rows in all: a regression head's cut points are fitted on them)
ENSEMBLE_DRAWS, ENSEMBLE_ROWS = 50, 50_000


def _to_scale(scores: np.ndarray, probability: bool) -> np.ndarray:
    """Where a model's own error is taken as additive: the logit of a probability (a
    probability near 0 or 1 cannot move far), a regression output as it is."""
    if not probability:
        return scores
    clipped = np.clip(scores, 1e-6, 1 - 1e-6)
    return np.log(clipped / (1 - clipped))


def on_ensemble_scale(frame: pd.DataFrame, singles: Sequence[pd.DataFrame],
                      models_per_answer: int = 1) -> pd.DataFrame:
    """Out-of-fold answers as the mean of K models would have given them, up to ENSEMBLE_DRAWS
    times over (rows repeated, each draw's images and patients named apart). A threshold
    chosen on one model's out-of-fold scores flags the mean of K models differently, because
    each model adds errors of its own that the mean averages away (at a 0.9 sensitivity target
    the ensemble gave 0.96-0.98). A model's error is taken as additive on the logit of
    P(referable) (a regression output: itself) and of one size, read off the test images where
    every model answered (the spread of their scores per image; no label read). Each class's
    out-of-fold scores, less that error (drawn in towards the class's mean), are what the
    models share; K errors are drawn about them and the K answers averaged as the ensemble
    averages them. `singles`: the K models' aligned test frames (one: the frame unchanged);
    `models_per_answer`: how many models each out-of-fold answer already averages (seeds)."""
    column = referable_column(frame)
    probability = column == REFERABLE_PROBABILITY_COLUMN
    models = len(singles)
    if models < 2:  # one model: it is the ensemble
        return frame
    spread = np.stack([_to_scale(single[column].to_numpy(float), probability)
                       for single in singles]).var(axis=0, ddof=1).mean()
    score = _to_scale(frame[column].to_numpy(float), probability)
    rng = np.random.default_rng(0)
    rounds = int(np.clip(ENSEMBLE_ROWS // max(len(frame), 1), 1, ENSEMBLE_DRAWS))
    draws = np.empty((rounds, len(frame)))
    own = spread / models_per_answer  # error variance left in an out-of-fold answer
    for members in (frame[GRADE_COLUMN].to_numpy() >= REFERABLE_GRADE,
                    frame[GRADE_COLUMN].to_numpy() < REFERABLE_GRADE):
        values = score[members]
        if not len(values):
            continue
        keep = np.sqrt(max(values.var() - own, 0.0) / values.var()) if values.var() > 0 else 1.0
        shared = values.mean() + keep * (values - values.mean())
        answers = shared + rng.normal(0, np.sqrt(spread), (rounds, models, len(values)))
        if probability:
            answers = 1 / (1 + np.exp(-answers))
        draws[:, members] = answers.mean(axis=1)
    # Each draw's patients are its own: a patient's worse eye is taken within one draw, never
    # the highest of fifty
    images, patients = frame[IMAGE_COLUMN], frame[PATIENT_COLUMN].astype(str)
    repeated = pd.concat([frame.assign(**{IMAGE_COLUMN: images + f"#{k}",
                                          PATIENT_COLUMN: patients + f"#{k}"})
                          for k in range(rounds)], ignore_index=True)
    return repeated.assign(**{column: draws.reshape(-1)})


def frame_metrics(frame: pd.DataFrame, prefix: str) -> dict[str, float]:
    """Loss (cross-entropy; a regression head's mean squared error on the grade), grading and
    referable-DR metrics of a predictions frame."""
    if is_regression_frame(frame):
        loss = float(np.mean((frame[OUTPUT_COLUMN] - frame[GRADE_COLUMN]) ** 2))
    else:
        probs = frame[PROBABILITY_COLUMNS].to_numpy()
        probs = probs / probs.sum(axis=1, keepdims=True)  # as read back from a CSV: off by 1e-9
        loss = float(log_loss(frame[GRADE_COLUMN], probs, labels=GRADES))
    return {f"{prefix}loss": loss,
            **grading_metrics(frame[GRADE_COLUMN].to_numpy(), frame[PREDICTED_COLUMN].to_numpy(),
                              prefix, referable_scores(frame))}


def honouring_quality(frame: pd.DataFrame, mode: str) -> pd.DataFrame:
    """The predictions frame without its quality marks when the run says quality=off (every
    photograph then counts as gradable, as predict grades every one)."""
    if mode != "off":
        return frame
    return frame.drop(columns=["gradable", "quality_reason"], errors="ignore")


def gradable_rows(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    """The rows of photographs judged gradable (all of them where quality was not assessed):
    what an operating point is chosen on and what screening rates count."""
    if frame is None or "gradable" not in frame:
        return frame
    return frame[frame["gradable"].to_numpy(bool)].reset_index(drop=True)


def majority_baseline(frame: pd.DataFrame) -> float:
    """The accuracy of predicting the most common grade for every image."""
    return float(frame[GRADE_COLUMN].value_counts(normalize=True).max())


def read_predictions(path: Path) -> pd.DataFrame:
    """A predictions file as written by predictions_frame (names kept as text: '10_left')."""
    frame = pd.read_csv(path, dtype={IMAGE_COLUMN: str, PATIENT_COLUMN: str})
    if "quality_reason" in frame:
        frame["quality_reason"] = frame["quality_reason"].fillna("").astype(str)
    return frame


def headline_metrics(test: pd.DataFrame, val: pd.DataFrame | None,
                     sensitivity_target: float, bootstrap_rounds: int = 0) -> dict[str, float]:
    """The selected epoch's metrics, keyed `<name>_selected`: test (and validation) metrics, and
    referable sensitivity / specificity at the operating point chosen on validation to reach
    sensitivity_target (none without a validation split: the test set never chooses it); with
    bootstrap_rounds, 95 % intervals of the test accuracy, kappa and referable AUC."""
    metrics = frame_metrics(test, "test_")
    if val is not None:
        metrics |= frame_metrics(val, "val_")
        chooses = gradable_rows(val)  # as the screening report chooses it
        threshold = threshold_for_sensitivity(chooses[GRADE_COLUMN].to_numpy(),
                                              referable_scores(chooses), sensitivity_target)
        for frame, prefix in ((test, "test_"), (val, "val_")):
            if not np.isnan(threshold):  # none chosen: no metric labelled "at target"
                metrics |= at_threshold(frame[GRADE_COLUMN].to_numpy(), referable_scores(frame),
                                        threshold, prefix)
    selected = {f"{key}_selected": value for key, value in metrics.items()}
    if bootstrap_rounds:  # test_acc_selected_ci_low, test_acc_selected_ci_high, ...
        intervals = run_intervals(test, "test_", bootstrap_rounds)
        selected |= {key.replace("_ci_", "_selected_ci_"): value
                     for key, value in intervals.items()}
    return selected
