import numpy as np
import pytest

from retino.core.grades import GRADES
from retino.evaluation.metrics import (
    at_threshold,
    confusion_matrix,
    grading_metrics,
    normalize_by_true_class,
    quadratic_weighted_kappa,
    referable_auc,
    referable_probability,
    threshold_for_sensitivity,
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
    assert quadratic_weighted_kappa(np.array([0, 0, 4, 4]), np.array([0, 4, 4, 4])) == \
        pytest.approx(0.5)


def test_qwk_extremes():
    assert quadratic_weighted_kappa(TRUE, TRUE) == pytest.approx(1.0)
    # Predicting grade 0 for everyone, the majority answer, is worth nothing.
    assert quadratic_weighted_kappa(TRUE, np.zeros(10, int)) == 0.0
    assert quadratic_weighted_kappa(np.zeros(4, int), np.zeros(4, int)) == 0.0  # undefined


def test_qwk_is_scikit_learns_cohen_kappa_on_any_answers():
    """retino counts the 5 x 5 table itself (bootstraps call it thousands of times): the same
    number as scikit-learn's, on balanced, skewed, one-sided and off-the-scale answers."""
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(0)
    cases = [(rng.integers(0, 5, n), rng.integers(0, 5, n)) for n in (3, 40, 400)]
    skewed = rng.choice(5, 300, p=[0.7, 0.1, 0.1, 0.05, 0.05])
    cases += [(skewed, np.clip(skewed + rng.integers(-1, 2, 300), 0, 4)),
              (skewed, np.zeros(300, int)), (np.full(5, 2), np.array([0, 1, 2, 3, 4])),
              (np.array([0, 1, 7, 4]), np.array([0, 2, 3, -1]))]  # 7, -1: off the scale
    for true, pred in cases:
        expected = cohen_kappa_score(true, pred, labels=GRADES, weights="quadratic")
        assert quadratic_weighted_kappa(true, pred) == pytest.approx(expected, abs=1e-12)
    none = np.array([], int)  # no images: undefined, as one grade everywhere is
    assert quadratic_weighted_kappa(none, none) == 0.0
    assert np.isnan(quadratic_weighted_kappa(none, none, undefined=np.nan))


def test_per_grade_metrics_and_macro_f1_by_hand():
    metrics = grading_metrics(TRUE, PRED, prefix="test_")
    assert metrics["test_acc"] == pytest.approx(0.6)
    assert [metrics[f"test_recall_grade{g}"] for g in range(5)] == [0.75, 0.5, 0.5, 1.0, 0.0]
    # precision: 0: 3/4, 1: 1/2, 2: 1/2 (one of two predicted 2s), 3: 1/2, 4: never predicted
    precision = [metrics[f"test_precision_grade{g}"] for g in range(5)]
    assert precision[:4] == [0.75, 0.5, 0.5, 0.5] and np.isnan(precision[4])  # undefined
    # F1 per grade: 0: 2*3/(4+4)=.75, 1: 2*1/(2+2)=.5, 2: 2*1/(2+2)=.5, 3: 2*1/(1+2)=2/3, 4: 0
    assert metrics["test_f1_grade3"] == pytest.approx(2 / 3)
    assert metrics["test_macro_f1"] == pytest.approx((0.75 + 0.5 + 0.5 + 2 / 3 + 0) / 5)
    assert "test_referable_auc" not in metrics  # only with probabilities


def one_hot_ish(grades, confidence):
    """(N, 5) probabilities: `confidence` on the given grade, the rest spread evenly."""
    probs = np.full((len(grades), 5), (1 - np.asarray(confidence))[:, None] / 4)
    probs[np.arange(len(grades)), grades] = confidence
    return probs


def test_referable_metrics_worked_by_hand():
    true = np.array([0, 0, 1, 1, 2, 3, 4, 4])
    pred = np.array([0, 2, 1, 0, 2, 1, 4, 4])
    probs = one_hot_ish(pred, np.array([0.9, 0.6, 0.8, 0.7, 0.9, 0.5, 0.8, 0.95]))
    score = referable_probability(probs)
    assert score[0] == pytest.approx(3 * 0.1 / 4)  # grades 2-4 of a confident grade-0 image
    metrics = grading_metrics(true, pred, prefix="val_", probs=probs)
    # Referable: images 4-7 (grades 2, 3, 4, 4). Flagged at argmax: 1, 4, 6, 7.
    assert metrics["val_referable_sensitivity"] == pytest.approx(3 / 4)  # image 5 missed
    assert metrics["val_referable_specificity"] == pytest.approx(3 / 4)  # image 1 flagged
    # P(referable): referable images .95, .375, .9, .975; the others .075, .8, .15, .225.
    # Of the 16 (referable, other) pairs only (.375, .8) is ordered wrong: AUC = 15/16.
    assert metrics["val_referable_auc"] == pytest.approx(15 / 16)


def test_threshold_chosen_on_validation_reaches_the_target_sensitivity():
    true = np.array([0, 0, 1, 2, 3, 4, 4, 2, 0, 1])
    p_ref = np.array([0.1, 0.2, 0.3, 0.9, 0.8, 0.7, 0.6, 0.25, 0.05, 0.4])
    probs = np.stack([1 - p_ref, np.zeros(10), p_ref, np.zeros(10), np.zeros(10)], axis=1)
    # Referable scores, highest first: 0.9, 0.8, 0.7, 0.6, 0.25. 80% of 5 = 4 images must be
    # flagged: the threshold is the 4th score, 0.6; 100% needs 0.25.
    assert threshold_for_sensitivity(true, probs, 0.8) == pytest.approx(0.6)
    assert threshold_for_sensitivity(true, probs, 1.0) == pytest.approx(0.25)
    at = at_threshold(true, probs, 0.25, prefix="test_")
    assert at["test_referable_sensitivity_at_target"] == 1.0
    assert at["test_referable_specificity_at_target"] == pytest.approx(3 / 5)  # 0.3, 0.4 flagged


def test_absent_grades_are_undefined_not_zero():
    """A perfect classifier on a set holding only grades 0 and 1: macro F1 1.0 (over the grades
    present), not 0.4; the absent grades' recall and F1 are nan, not 0."""
    true = np.array([0, 0, 1, 1, 0])
    metrics = grading_metrics(true, true.copy(), prefix="val_")
    assert metrics["val_macro_f1"] == 1.0
    assert np.isnan(metrics["val_recall_grade3"]) and np.isnan(metrics["val_f1_grade4"])
    assert np.isnan(metrics["val_precision_grade2"])  # never predicted: undefined
    wrong = grading_metrics(true, np.array([0, 0, 1, 3, 0]), prefix="val_")
    assert wrong["val_precision_grade3"] == 0.0  # predicted, never right: a real 0


def test_referable_auc_equals_scikit_learns_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    referable = rng.random(300) < 0.3
    score = np.round(rng.random(300) + 0.3 * referable, 1)  # rounded: many ties
    assert referable_auc(referable, score) == pytest.approx(roc_auc_score(referable, score),
                                                            abs=1e-12)
