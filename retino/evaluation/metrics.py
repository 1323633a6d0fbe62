"""Grading and screening metrics, computed by scikit-learn: pure functions of arrays.

Grading: accuracy, quadratic weighted kappa (the Kaggle competition's metric), macro F1 over the
grades the set holds and per-grade precision, recall and F1 (nan where a grade is absent).
Screening: referable DR, grade >= 2 ("moderate or worse", the threshold of screening
programmes), scored from the summed probabilities of grades 2-4 (or a regression head's output):
ROC AUC, and sensitivity and specificity at the predicted grade or at a threshold on that score.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn import metrics as skm

from retino.core.grades import (
    GRADES,
    NUM_GRADES,
    OUTPUT_COLUMN,
    REFERABLE_GRADE,
    REFERABLE_PROBABILITY_COLUMN,
)

log = logging.getLogger(__name__)


def confusion_matrix(true: np.ndarray, pred: np.ndarray,
                     num_classes: int = NUM_GRADES) -> np.ndarray:
    """counts[i, j] = number of images of true grade i predicted as grade j (answers off the
    0 .. num_classes - 1 scale left out, as scikit-learn leaves out labels not asked for)."""
    true, pred = np.asarray(true, np.int64), np.asarray(pred, np.int64)
    on_the_scale = (true >= 0) & (true < num_classes) & (pred >= 0) & (pred < num_classes)
    return np.bincount(true[on_the_scale] * num_classes + pred[on_the_scale],
                       minlength=num_classes ** 2).reshape(num_classes, num_classes)


def normalize_by_true_class(counts: np.ndarray) -> np.ndarray:
    """Each row divided by its total (rows of absent grades stay 0), as in the lab's figure."""
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros(counts.shape, float), where=totals > 0)


_DISAGREEMENT = (np.arange(NUM_GRADES)[:, None] - np.arange(NUM_GRADES)[None, :]) ** 2


def quadratic_weighted_kappa(true: np.ndarray, pred: np.ndarray,
                             undefined: float = 0.0) -> float:
    """Cohen's kappa with quadratic weights: 1 = perfect, 0 = chance, < 0 worse than chance.
    `undefined` (0 by default; a bootstrap asks for nan) where it is undefined: one grade
    everywhere, in both true and predicted, or no images. Computed from the 5 x 5 counts, equal
    to scikit-learn's cohen_kappa_score at a fiftieth of its time: bootstraps and the regression
    head's cut-point fit call it thousands of times per run."""
    counts = confusion_matrix(true, pred)
    if not counts.any():
        return undefined
    observed = counts / counts.sum()
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    chance_disagreement = (_DISAGREEMENT * expected).sum()
    if chance_disagreement == 0:
        return undefined
    return float(1 - (_DISAGREEMENT * observed).sum() / chance_disagreement)


def referable_probability(probs: np.ndarray) -> np.ndarray:
    """P(grade >= 2) per image, from (N, 5) grade probabilities."""
    return np.asarray(probs)[:, REFERABLE_GRADE:].sum(axis=1)


def referable_score(answers: np.ndarray) -> np.ndarray:
    """What ranks referable DR, per image: P(grade >= 2) summed from (N, 5) grade
    probabilities, or, given one number per image, that number (P(referable) itself, or a
    regression head's output, which gives no probabilities)."""
    answers = np.asarray(answers, float)
    return referable_probability(answers) if answers.ndim == 2 else answers


def referable_column(frame: pd.DataFrame) -> str:
    """The predictions frame's column that ranks referable DR: p_referable, or a regression
    run's output."""
    return REFERABLE_PROBABILITY_COLUMN if REFERABLE_PROBABILITY_COLUMN in frame \
        else OUTPUT_COLUMN


def referable_scores(frame: pd.DataFrame) -> np.ndarray:
    return frame[referable_column(frame)].to_numpy(float)


def sensitivity_specificity(referable: np.ndarray, flagged: np.ndarray) -> tuple[float, float]:
    """(sensitivity, specificity) of boolean flags against boolean truth; nan where a side is
    absent."""
    referable, flagged = np.asarray(referable, bool), np.asarray(flagged, bool)
    sens = flagged[referable].mean() if referable.any() else np.nan
    spec = (~flagged[~referable]).mean() if (~referable).any() else np.nan
    return float(sens), float(spec)


def threshold_for_sensitivity(true: np.ndarray, probs: np.ndarray, target: float) -> float:
    """The highest threshold on the referable score (probs: see referable_score) whose
    sensitivity reaches target (chosen on validation, then applied to test); nan when there is
    no referable image to choose on: no operating point, rather than one nobody chose."""
    referable = np.asarray(true) >= REFERABLE_GRADE
    if not referable.any():
        log.warning("The validation split holds no referable image (grade >= 2): no referable "
                    "operating point can be chosen on it.")
        return float("nan")
    scores = np.sort(referable_score(probs)[referable])[::-1]  # highest first
    needed = int(np.ceil(target * len(scores) - 1e-9))  # images to flag (0.07*100 is 7.000..1)
    return float(scores[max(needed, 1) - 1])


def threshold_for_specificity(true: np.ndarray, probs: np.ndarray, target: float) -> float:
    """The lowest threshold on the referable score whose specificity reaches target: just above the
    non-referable score that the target's share of non-referable images must stay below (chosen
    on validation, then applied to test); nan when there is no non-referable image."""
    healthy = np.asarray(true) < REFERABLE_GRADE
    if not healthy.any():
        log.warning("The validation split holds no non-referable image: no high-specificity "
                    "operating point can be chosen on it.")
        return float("nan")
    scores = np.sort(referable_score(probs)[healthy])  # lowest first
    kept = int(np.ceil(target * len(scores) - 1e-9))  # images that must stay below it
    # flagged is P >= threshold, so the threshold sits just above the kept-th lowest score
    return float(np.nextafter(scores[max(kept, 1) - 1], np.inf))


def referable_auc(referable: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of P(referable) against the truth; nan when only one kind of image is present.
    Computed as the Mann-Whitney statistic over midranks (ties count half), which equals
    scikit-learn's roc_auc_score at a quarter of its time: bootstraps call it thousands of
    times."""
    referable = np.asarray(referable, bool)
    positives = int(referable.sum())
    negatives = len(referable) - positives
    if not positives or not negatives:
        return float("nan")
    ranks = rankdata(np.asarray(score, float))
    return float((ranks[referable].sum() - positives * (positives + 1) / 2)
                 / (positives * negatives))


def net_benefit(referable: np.ndarray, probability: np.ndarray,
                thresholds: np.ndarray) -> np.ndarray:
    """Vickers & Elkin's (2006) net benefit of referring whoever's probability reaches each
    threshold probability p_t: true positives minus false positives weighted by the odds
    p_t / (1 - p_t) (the harm of a needless referral against the good of a needed one), per
    person screened."""
    referable = np.asarray(referable, bool)
    probability = np.asarray(probability, float)
    flagged = probability[None, :] >= np.asarray(thresholds, float)[:, None]  # (T, N)
    true = (flagged & referable).sum(axis=1) / len(referable)
    false = (flagged & ~referable).sum(axis=1) / len(referable)
    return true - false * thresholds / (1 - thresholds)


def screening_metrics(true: np.ndarray, pred: np.ndarray, probs: np.ndarray,
                      prefix: str) -> dict[str, float]:
    """Referable DR: ROC AUC of the referable score (nan with one class only) and
    sensitivity/specificity at the predicted grade."""
    referable = np.asarray(true) >= REFERABLE_GRADE
    sens, spec = sensitivity_specificity(referable, np.asarray(pred) >= REFERABLE_GRADE)
    return {f"{prefix}referable_auc": referable_auc(referable, referable_score(probs)),
            f"{prefix}referable_sensitivity": sens, f"{prefix}referable_specificity": spec}


def at_threshold(true: np.ndarray, probs: np.ndarray, threshold: float,
                 prefix: str) -> dict[str, float]:
    """Referable sensitivity and specificity when flagging a referable score >= threshold."""
    sens, spec = sensitivity_specificity(np.asarray(true) >= REFERABLE_GRADE,
                                         referable_score(probs) >= threshold)
    return {f"{prefix}referable_threshold": threshold,
            f"{prefix}referable_sensitivity_at_target": sens,
            f"{prefix}referable_specificity_at_target": spec}


def per_grade_scores(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, ...]:
    """(precision, recall, F1) per grade 0-4, nan where undefined: recall and F1 of a grade the
    set does not hold, precision of a grade never predicted. An absent grade is not a grade the
    model failed on: scoring it 0 would give a perfect classifier of grades 0-1 a macro F1 of
    0.4."""
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        true, pred, labels=GRADES, zero_division=0)
    present = np.isin(GRADES, np.asarray(true))
    predicted = np.isin(GRADES, np.asarray(pred))
    return (np.where(predicted, precision, np.nan), np.where(present, recall, np.nan),
            np.where(present, f1, np.nan))


def grading_metrics(true: np.ndarray, pred: np.ndarray, prefix: str = "test_",
                    probs: np.ndarray | None = None) -> dict[str, float]:
    """Accuracy, quadratic weighted kappa, macro F1 (over the grades the set holds), per-grade
    precision / recall / F1 (nan where undefined) and, given the (N, 5) probabilities (or the
    referable score, see referable_score), the referable-DR metrics; keyed for logging."""
    precision, recall, f1 = per_grade_scores(true, pred)
    metrics = {f"{prefix}acc": float(skm.accuracy_score(true, pred)),
               f"{prefix}qwk": quadratic_weighted_kappa(true, pred),
               f"{prefix}macro_f1": float(np.nanmean(f1)) if len(true) else float("nan")}
    for grade in GRADES:
        metrics |= {f"{prefix}precision_grade{grade}": float(precision[grade]),
                    f"{prefix}recall_grade{grade}": float(recall[grade]),
                    f"{prefix}f1_grade{grade}": float(f1[grade])}
    if probs is not None:
        metrics |= screening_metrics(true, pred, probs, prefix)
    return metrics
