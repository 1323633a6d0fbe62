"""Grading metrics from true and predicted grades: pure functions of integer arrays."""

from __future__ import annotations

import numpy as np

NUM_GRADES = 5


def confusion_matrix(true: np.ndarray, pred: np.ndarray,
                     num_classes: int = NUM_GRADES) -> np.ndarray:
    """counts[i, j] = number of images of true grade i predicted as grade j."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(true, int), np.asarray(pred, int)), 1)
    return counts


def normalize_by_true_class(counts: np.ndarray) -> np.ndarray:
    """Each row divided by its total (rows of absent grades stay 0), as in the lab's figure."""
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros(counts.shape, float), where=totals > 0)


def quadratic_weighted_kappa(counts: np.ndarray) -> float:
    """Cohen's kappa with quadratic weights: 1 = perfect, 0 = chance, < 0 worse than chance."""
    k = counts.shape[0]
    n = counts.sum()
    if n == 0:
        return 0.0
    i, j = np.indices((k, k))
    weights = (i - j) ** 2 / (k - 1) ** 2
    expected = np.outer(counts.sum(axis=1), counts.sum(axis=0)) / n
    denominator = (weights * expected).sum()
    # All images of one grade and all predicted the same: no disagreement is possible.
    return float(1.0 - (weights * counts).sum() / denominator) if denominator > 0 else 0.0


def per_class_recall(counts: np.ndarray) -> np.ndarray:
    """Recall of each grade (0 for a grade absent from the true labels)."""
    return np.diag(normalize_by_true_class(counts))


def macro_f1(counts: np.ndarray) -> float:
    """Unweighted mean over grades of F1; a grade never seen nor predicted counts as 0."""
    tp = np.diag(counts).astype(float)
    denominator = counts.sum(axis=0) + counts.sum(axis=1)  # predicted + true = 2TP + FP + FN
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return float(f1.mean())


def grading_metrics(true: np.ndarray, pred: np.ndarray, prefix: str = "test_") -> dict[str, float]:
    """Accuracy, quadratic weighted kappa, macro-F1 and per-grade recall, keyed for logging."""
    counts = confusion_matrix(true, pred)
    metrics = {
        f"{prefix}acc": float(np.trace(counts) / max(counts.sum(), 1)),
        f"{prefix}qwk": quadratic_weighted_kappa(counts),
        f"{prefix}macro_f1": macro_f1(counts),
    }
    for grade, recall in enumerate(per_class_recall(counts)):
        metrics[f"{prefix}recall_grade{grade}"] = float(recall)
    return metrics
