import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, f1_score

from retino.metrics import (
    confusion_matrix,
    grading_metrics,
    macro_f1,
    normalize_by_true_class,
    per_class_recall,
    quadratic_weighted_kappa,
)

TRUE = np.array([0, 0, 0, 0, 1, 1, 2, 2, 3, 4])
PRED = np.array([0, 0, 0, 1, 1, 0, 2, 3, 3, 2])


def test_confusion_matrix_counts_by_true_row_and_predicted_column():
    counts = confusion_matrix(TRUE, PRED)
    assert counts[0].tolist() == [3, 1, 0, 0, 0]
    assert counts[4].tolist() == [0, 0, 1, 0, 0]
    assert counts.sum() == 10


def test_normalized_rows_sum_to_one_and_absent_grade_row_is_zero():
    counts = confusion_matrix(np.array([0, 0, 1]), np.array([0, 1, 1]))
    norm = normalize_by_true_class(counts)
    assert norm[0].tolist() == [0.5, 0.5, 0, 0, 0]
    assert norm[3].tolist() == [0, 0, 0, 0, 0]


def test_qwk_hand_computed_two_by_two():
    # 2 grades on a 5-grade scale: true [0,0,4,4], pred [0,4,4,4].
    # observed weighted disagreement: one (0->4) pair, weight 1 -> 1/4 per image
    # expected: row totals (2,2), col totals (1,3); E[0,4] = 2*3/4 = 1.5, E[4,0] = 2*1/4 = 0.5
    # kappa = 1 - 1 / (1.5 + 0.5) = 0.5
    counts = confusion_matrix(np.array([0, 0, 4, 4]), np.array([0, 4, 4, 4]))
    assert quadratic_weighted_kappa(counts) == pytest.approx(0.5)


def test_qwk_matches_sklearn_and_extremes():
    counts = confusion_matrix(TRUE, PRED)
    expected = cohen_kappa_score(TRUE, PRED, weights="quadratic")
    assert quadratic_weighted_kappa(counts) == pytest.approx(expected)
    assert quadratic_weighted_kappa(confusion_matrix(TRUE, TRUE)) == pytest.approx(1.0)
    # Predicting grade 0 for everyone, the majority answer, is worth nothing.
    assert quadratic_weighted_kappa(confusion_matrix(TRUE, np.zeros(10, int))) == 0.0


def test_recall_and_macro_f1_by_hand():
    counts = confusion_matrix(TRUE, PRED)
    assert per_class_recall(counts).tolist() == [0.75, 0.5, 0.5, 1.0, 0.0]
    # F1 per grade: 0: 2*3/(4+4)=.75, 1: 2*1/(2+2)=.5, 2: 2*1/(2+2)=.5, 3: 2*1/(1+2)=2/3, 4: 0
    assert macro_f1(counts) == pytest.approx((0.75 + 0.5 + 0.5 + 2 / 3 + 0) / 5)
    assert macro_f1(counts) == pytest.approx(
        f1_score(TRUE, PRED, average="macro", labels=range(5), zero_division=0))


def test_grading_metrics_keys_for_logging():
    metrics = grading_metrics(TRUE, PRED, prefix="test_")
    assert metrics["test_acc"] == pytest.approx(0.6)
    assert {f"test_recall_grade{g}" for g in range(5)} <= metrics.keys()
    assert {"test_qwk", "test_macro_f1"} <= metrics.keys()
