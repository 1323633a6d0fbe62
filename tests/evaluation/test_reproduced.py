"""A reproduction's verdicts: identical predictions, a number that moved within chance, and one
that moved beyond it."""

from retino.evaluation.reproduced import (
    DIFFERS,
    EXPECTED_IDENTICAL,
    IDENTICAL,
    NOT_COMPARED,
    REPRODUCED,
    overall_verdict,
    reproduction_verdicts,
)
from tests.helpers.predictions import better, predictions


def verdicts(original, again, expect_identical=False):
    found = reproduction_verdicts(original, again, 200, expect_identical)
    return {verdict.metric: verdict for verdict in found}


def test_equal_predictions_are_identical_in_any_row_order():
    original = predictions(80)
    found = verdicts(original, original.sample(frac=1, random_state=0))
    assert {v.verdict for v in found.values()} == {IDENTICAL}
    assert found["acc"].cells()[3] == "+0.00 [+0.00, +0.00]"


def test_a_few_answers_changed_reproduce_and_many_differ():
    original = predictions(150)
    close = original.copy()
    close.loc[:1, "p_referable"] += 0.01  # two scores moved a little: no grade changed
    close.loc[0, "predicted"] = (close.loc[0, "predicted"] + 1) % 5
    found = verdicts(original, close)
    assert found["acc"].verdict == REPRODUCED and found["referable_auc"].verdict == REPRODUCED
    far = better(original, 0.9)  # nine in ten wrong answers made right
    assert verdicts(original, far)["acc"].verdict == DIFFERS
    assert overall_verdict([v.verdict for v in verdicts(original, far).values()]) == DIFFERS


def test_a_deterministic_cpu_run_that_is_not_identical_says_so():
    original = predictions(150)
    close = original.copy()
    close.loc[0, "p_referable"] += 1e-6
    found = verdicts(original, close, expect_identical=True)
    assert found["acc"].verdict == REPRODUCED and found["acc"].note == EXPECTED_IDENTICAL
    assert found["acc"].cells()[-1] == f"{REPRODUCED} ({EXPECTED_IDENTICAL})"


def test_an_auc_undefined_on_the_test_set_is_not_compared_and_left_aside():
    """No referable photograph: the AUC is undefined on both sides; it said "differs"."""
    original = predictions(60)
    original["grade"] = original["grade"] % 2  # grades 0 and 1 only
    original["predicted"] = original["predicted"] % 2
    close = original.copy()
    close.loc[0, "p_referable"] += 0.01
    found = verdicts(original, close)
    assert found["referable_auc"].verdict == NOT_COMPARED
    assert overall_verdict([v.verdict for v in found.values()]) == REPRODUCED
