"""95 % intervals of the test metrics, a patient's eyes counted together."""

import numpy as np
import pytest

from retino.evaluation.intervals import run_intervals, wilson_bounds
from retino.evaluation.predictions import frame_metrics, headline_metrics
from tests.helpers.predictions import predictions


def width(intervals, name):
    return intervals[f"test_{name}_ci_high"] - intervals[f"test_{name}_ci_low"]


def test_intervals_contain_the_estimate_and_narrow_as_the_test_set_grows():
    small, large = predictions(60), predictions(960, seed=1)
    point = frame_metrics(small, "test_")
    ci_small = run_intervals(small, "test_", rounds=300)
    ci_large = run_intervals(large, "test_", rounds=300)
    for name in ("acc", "qwk", "referable_auc"):
        assert ci_small[f"test_{name}_ci_low"] <= point[f"test_{name}"] \
            <= ci_small[f"test_{name}_ci_high"], name
        assert width(ci_large, name) < width(ci_small, name) / 2, name  # about 1 / sqrt(16)
    assert run_intervals(small, "test_", rounds=300) == ci_small  # seeded


def test_a_patients_eyes_are_counted_together():
    """Eyes that are both right or both wrong tell no more than one eye: the accuracy's
    interval is Wilson's over the patients, not over the images."""
    frame = predictions(100, both_eyes_agree=True)
    intervals = run_intervals(frame, "test_", rounds=0)
    acc = frame_metrics(frame, "")["acc"]
    assert width(intervals, "acc") == pytest.approx(np.subtract(*wilson_bounds(acc, 100)[::-1]),
                                                    rel=0.02)
    assert width(intervals, "acc") > 1.3 * np.subtract(*wilson_bounds(acc, 200)[::-1])


def test_headline_metrics_carry_the_intervals_when_asked():
    frame = predictions(40)
    with_ci = headline_metrics(frame, None, 0.9, bootstrap_rounds=50)
    assert with_ci["test_acc_selected_ci_low"] <= with_ci["test_acc_selected"] \
        <= with_ci["test_acc_selected_ci_high"]
    assert "test_qwk_selected_ci_high" in with_ci
    assert not any("_ci_" in key for key in headline_metrics(frame, None, 0.9))
    assert pytest.approx(with_ci["test_acc_selected"]) == frame_metrics(frame, "test_")["test_acc"]


def test_the_study_table_shows_a_single_run_with_its_intervals():
    from retino.studies.results_table import results_table
    from retino.tracking.records import RunRecord

    final = {"test_acc_selected": 0.872, "test_acc_selected_ci_low": 0.84,
             "test_acc_selected_ci_high": 0.9, "test_qwk_selected": 0.904,
             "test_qwk_selected_ci_low": 0.87, "test_qwk_selected_ci_high": 0.93,
             "selected_epoch": 9, "test_majority_baseline": 0.724}
    run = RunRecord("r1", "resnet18-scratch-64px", "FINISHED", {"seed": "0"}, {},
                    {"test_acc": [0.8, 0.876]}, final, None)
    header, [row] = results_table([run])
    cells = dict(zip(header, row, strict=True))
    assert cells["test acc % (selected epoch)"] == "87.20 [84.00, 90.00]"
    assert cells["test QWK (selected)"] == "0.904 [0.870, 0.930]"
    # not logged: no interval either
    assert cells["referable AUC (selected, all photographs)"] == "nan"
    assert cells["best test acc % (epoch chosen on test, as the lab)"] == "87.60"
    assert cells["majority-grade baseline %"] == "72.40" and cells["selected epoch"] == "9"


def test_undefined_resamples_are_counted_and_one_referable_patient_gives_no_auc_interval():
    """60 images, one referable patient: many resamples hold one grade everywhere, where kappa
    is undefined: they are left out and counted (never scored 0); an AUC's variance needs two
    referable patients, so it gets no interval at all."""
    frame = predictions(30, seed=3)
    frame["grade"] = np.where(frame["patient"] == "0", 3, 0)
    frame["predicted"] = frame["grade"]  # without patient 0, grade 0 everywhere: undefined
    intervals = run_intervals(frame, "test_", rounds=300)
    assert intervals["test_referable_patients"] == 1
    assert intervals["test_qwk_ci_undefined_rounds"] > 50  # ~ (29/30)^30 = 36 %
    assert np.isnan(intervals["test_referable_auc_ci_low"])
    assert not np.isnan(intervals["test_acc_ci_low"])


def test_the_study_table_says_why_an_interval_is_missing():
    from retino.studies.results_table import results_table
    from retino.tracking.records import RunRecord

    final = {"test_referable_auc_selected": 0.91, "test_referable_auc_selected_ci_low": np.nan,
             "test_referable_auc_selected_ci_high": np.nan, "test_referable_patients": 3,
             "test_acc_selected": 0.8, "test_acc_selected_ci_low": 0.7,
             "test_acc_selected_ci_high": 0.9, "test_acc_selected_ci_undefined_rounds": 4}
    run = RunRecord("r1", "resnet18-scratch-64px", "FINISHED", {"seed": "0"}, {}, {}, final, None)
    header, [row] = results_table([run])
    cells = dict(zip(header, row, strict=True))
    assert cells["referable AUC (selected, all photographs)"] == \
        "0.910 [no interval: 3 referable patients]"
    assert cells["test acc % (selected epoch)"] == "80.00 [70.00, 90.00; 4 resamples undefined]"


def test_sensitivity_without_an_operating_point_is_labelled_at_the_predicted_grade():
    from retino.studies.results_table import results_table
    from retino.tracking.records import RunRecord

    final = {"test_referable_sensitivity_selected": 0.8, "test_referable_specificity_selected": 0.9}
    run = RunRecord("r1", "resnet18-scratch-64px", "FINISHED", {"seed": "0"}, {}, {}, final, None)
    header, [row] = results_table([run])
    cells = dict(zip(header, row, strict=True))
    assert cells["referable sensitivity % (selected, at operating point, all photographs)"] == \
        "80.00 (at predicted grade)"
    assert cells["test acc % (selected epoch)"] == "nan"  # other columns unmarked


def test_a_validation_split_without_referable_images_chooses_no_operating_point():
    """No referable image in validation: no threshold can reach a sensitivity target, so none
    is reported "at target" (it used to fall back to P >= 0.5 and be labelled as chosen)."""
    test, val = predictions(30, seed=4), predictions(20, seed=5)
    val["grade"] = np.minimum(val["grade"], 1)
    metrics = headline_metrics(test, val, 0.9)
    assert not any("_at_target" in key or "threshold" in key for key in metrics)
    assert "test_referable_sensitivity_selected" in metrics  # at the predicted grade


def test_a_run_without_an_operating_point_flags_at_one_half_and_says_so(tmp_path):
    from retino.serving.grader import FALLBACK_THRESHOLD, judgement

    val = predictions(20, seed=5)
    val["grade"] = np.minimum(val["grade"], 1)
    val.to_csv(tmp_path / "predictions_val.csv", index=False)
    cfg = {"referable_sensitivity_target": 0.9}
    from omegaconf import OmegaConf
    for val in (tmp_path / "predictions_val.csv", None):
        judged = judgement(OmegaConf.create(cfg), val)
        assert (judged["threshold"], judged["threshold_chosen"]) == (FALLBACK_THRESHOLD, False)
