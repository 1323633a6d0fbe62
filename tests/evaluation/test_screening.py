"""The screening report: intervals that count patients and never collapse, the two operating
points (per image and per patient), per-patient (worse-eye) referral from every eye, the three
named sets of photographs, calibration."""

import numpy as np
import pandas as pd
import pytest

from retino.core.metric_names import (
    ALL_PHOTOGRAPHS,
    GRADABLE_PHOTOGRAPHS,
    UNGRADABLE_REFERRED,
    screening_key,
)
from retino.evaluation.intervals import wilson_bounds
from retino.evaluation.metrics import threshold_for_specificity
from retino.evaluation.screening import (
    AT_PREDICTED_GRADE,
    expected_calibration_error,
    screening_markdown,
    screening_report,
    worse_eye,
)


def frame(rows):
    """A predictions frame from (image, grade, P(referable)) rows; the predicted grade and the
    five probabilities follow from P(referable)."""
    images, grades, p_ref = zip(*rows, strict=True)
    p_ref = np.asarray(p_ref, float)
    out = pd.DataFrame({"image": images,
                        "patient": [name.rpartition("_")[0] or name for name in images],
                        "grade": grades, "predicted": np.where(p_ref >= 0.5, 2, 0)})
    out[[f"p{g}" for g in range(5)]] = np.stack(
        [1 - p_ref, np.zeros_like(p_ref), p_ref, np.zeros_like(p_ref), np.zeros_like(p_ref)], 1)
    out["p_referable"] = p_ref
    return out


@pytest.mark.parametrize("count, total, low, high", [
    # Newcombe (1998), Stat Med 17:857, Table I, method 3 (score interval without correction)
    (81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718)])
def test_wilson_intervals_match_newcombes_published_examples(count, total, low, high):
    assert wilson_bounds(count / total, total) == pytest.approx((low, high), abs=5e-5)


def test_the_high_specificity_threshold_reaches_its_target_on_validation():
    true = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 2])
    p_ref = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
    probs = np.stack([1 - p_ref, np.zeros(10), p_ref, np.zeros(10), np.zeros(10)], axis=1)
    threshold = threshold_for_specificity(true, probs, 0.8)  # 8 of 9 healthy below it
    assert 0.8 < threshold < 0.9  # just above the 8th lowest healthy score, 0.8
    assert (p_ref[true < 2] < threshold).sum() == 8
    assert threshold_for_specificity(true, probs, 1.0) > 0.9


def test_a_patient_is_referred_by_the_worse_eye():
    """Four patients, their eyes (grade, P(referable)); at the 0.5 threshold on patients, who
    is referable and who is flagged is decided by either eye."""
    test = frame([("1_left", 0, 0.2), ("1_right", 3, 0.9),   # referable, flagged
                  ("2_left", 1, 0.6), ("2_right", 1, 0.1),   # healthy, flagged (false positive)
                  ("3_left", 2, 0.3), ("3_right", 0, 0.4),   # referable, missed
                  ("4_left", 0, 0.1), ("4_right", 0, 0.2)])  # healthy, not flagged
    patients = worse_eye(test)
    assert patients.set_index("patient")["grade"].to_dict() == {"1": 3, "2": 1, "3": 2, "4": 0}
    assert patients.set_index("patient")["p_referable"].to_dict() == {
        "1": 0.9, "2": 0.6, "3": 0.4, "4": 0.2}
    report = screening_report(test, None, 0.9, 0.9)
    rates = report.by_patient.rates[AT_PREDICTED_GRADE.name]
    assert (rates["sensitivity"].count, rates["sensitivity"].total) == (1, 2)
    assert (rates["specificity"].count, rates["specificity"].total) == (1, 2)
    assert (rates["ppv"].count, rates["ppv"].total) == (1, 2)
    assert report.by_patient.prevalence == 0.5 and report.by_image.prevalence == 0.25
    images = report.by_image.rates[AT_PREDICTED_GRADE.name]
    assert (images["sensitivity"].count, images["sensitivity"].total) == (1, 2)
    assert (images["specificity"].count, images["specificity"].total) == (5, 6)


def test_ece_is_zero_when_calibrated_and_the_gap_when_overconfident():
    # 10 cases at 0.2 with 2 events, 10 at 0.7 with 7: what is predicted happens as often.
    calibrated_p = np.r_[np.full(10, 0.2), np.full(10, 0.7)]
    calibrated_y = np.r_[np.arange(10) < 2, np.arange(10) < 7]
    assert expected_calibration_error(calibrated_y, calibrated_p) == pytest.approx(0.0)
    # Always 95 % sure, right 60 % of the time: ECE 0.35.
    assert expected_calibration_error(np.arange(20) < 12, np.full(20, 0.95)) == \
        pytest.approx(0.35)


def test_two_operating_points_are_chosen_on_validation_and_applied_to_test():
    def sample(patients, seed):
        r = np.random.default_rng(seed)
        grades = r.choice([0, 0, 0, 1, 2, 3], 2 * patients)
        # overlapping scores: 90 % sensitivity needs a lower threshold than 90 % specificity
        p = np.clip(np.where(grades >= 2, 0.55, 0.4) + r.normal(0, 0.12, 2 * patients), 0, 1)
        return frame([(f"{i // 2}_{('left', 'right')[i % 2]}", g, s)
                      for i, (g, s) in enumerate(zip(grades, p, strict=True))])
    val, test = sample(150, 1), sample(200, 2)
    report = screening_report(test, val, 0.9, 0.9)
    names = [point.name for point in report.points]
    assert names == ["sensitivity target", "specificity target"]
    high_sens, high_spec = report.points
    assert high_sens.threshold < high_spec.threshold
    for level in report.main.levels:
        sens = level.rates["sensitivity target"]["sensitivity"]
        assert sens.interval[0] <= sens.value <= sens.interval[1]
        assert level.rates["specificity target"]["specificity"].value > \
            level.rates["sensitivity target"]["specificity"].value
        assert level.auc_interval[0] <= level.auc <= level.auc_interval[1]
    metrics = report.metrics("test")
    assert {"test_patient_referable_auc_selected", "test_referable_ppv_at_target_selected",
            "test_patient_referable_npv_at_spec_target_selected",
            "test_patient_referable_npv_at_spec_target_selected_ci_low",
            "test_referable_threshold_spec_target_selected",
            "test_referable_brier_selected", "test_referable_ece_selected",
            "test_grade_brier_selected"} <= set(metrics)
    text = screening_markdown(report)
    assert "patient (worse eye) | specificity target" in text


def test_a_set_without_patient_identities_has_no_patient_rows_and_says_so():
    test = frame([(f"img{i}", i % 3 + 1, (i % 3) / 2) for i in range(12)])
    report = screening_report(test, None, 0.9, 0.9)
    assert report.by_patient is None
    assert "Each image is its own patient" in screening_markdown(report)


def test_a_finished_run_carries_its_screening_report_page_and_calibration(trained_run):
    """What a reviewer opens in mlflow ui: screening.md, calibration.png and report.html (one
    page, its figures inline), and the screening metrics beside the headline ones."""
    from mlflow.tracking import MlflowClient

    folder, run_id, uri, _, _ = trained_run
    client = MlflowClient(uri)
    artifacts = {item.path for item in client.list_artifacts(run_id)}
    assert {"screening.md", "calibration.png", "decision_curve.png", "report.html"} <= artifacts
    screening = (folder / "screening.md").read_text()
    assert "| patient (worse eye) | sensitivity target |" in screening  # its tiny validation
    # split holds no healthy image: no high-specificity point, which the log says
    page = (folder / "report.html").read_text()
    assert "Referable DR screening" in page and "<table>" in page
    assert page.count("<img") >= 4  # accuracy, confusion, ROC, calibration
    metrics = client.get_run(run_id).data.metrics
    assert {"test_patient_referable_auc_selected", "test_referable_brier_selected",
            "test_referable_ppv_at_target_selected",
            "test_patient_referable_sensitivity_at_target_selected"} <= set(metrics)
    # The headline sensitivity (results.md's column) is the page's "all photographs" row
    row = next(line for line in screening.splitlines()
               if line.startswith(f"| {ALL_PHOTOGRAPHS} | image | sensitivity target |"))
    shown = float(row.split("|")[4].split()[0])
    assert shown == pytest.approx(100 * metrics["test_referable_sensitivity_at_target_selected"],
                                  abs=0.05)


def test_patients_known_from_a_cache_reach_the_predictions_and_the_per_patient_rows(tmp_path):
    """Names without an eye suffix (Messidor-2's), whose patients a cache's patients.csv gives:
    the split index carries them, the predictions frame keeps them, and the report counts
    patients instead of calling every image its own."""
    from retino.data.layout import read_split_index, write_patients_csv, write_split_csvs
    from retino.evaluation.predictions import predictions_frame

    names = [f"IM{i:04d}" for i in range(8)]
    (tmp_path / "images").mkdir()
    for name in names:
        (tmp_path / "images" / f"{name}.jpeg").write_bytes(b"x")
    write_split_csvs(tmp_path, "test", names, [0, 2, 0, 0, 3, 3, 1, 0])
    write_patients_csv(tmp_path, {name: f"exam{i // 2}" for i, name in enumerate(names)})
    index = read_split_index(tmp_path, tmp_path / "images", "test")
    assert index.patients == ["exam0", "exam0", "exam1", "exam1", "exam2", "exam2", "exam3",
                              "exam3"]
    probs = np.tile([0.6, 0.1, 0.2, 0.05, 0.05], (8, 1))
    frame = predictions_frame(index.paths, np.array(index.grades), probs, index.patients)
    report = screening_report(frame, None, 0.9, 0.9)
    assert report.by_patient is not None
    assert (report.by_patient.cases, report.by_patient.referable) == (4, 2)


def test_photographs_that_are_not_gradable_are_left_out_then_counted_as_refer():
    """Six patients, two eyes each; two photographs not gradable. The rates are those of the
    ten gradable photographs; imageability is 10/12 with its Wilson interval; counting the two
    as "refer", as the IDx-DR trial did, flags them: specificity falls, sensitivity does not."""
    rows = [(f"{p}_{eye}", grade, score) for p, (grade, score) in enumerate(
        [(0, 0.1), (0, 0.2), (3, 0.9), (0, 0.3), (2, 0.8), (0, 0.1)]) for eye in ("left", "right")]
    test = frame(rows)
    test["gradable"] = [True] * 12
    test.loc[[1, 7], "gradable"] = False  # 0_right (healthy), 3_right (healthy)
    report = screening_report(test, None, 0.9, 0.9)
    assert (report.imageability.count, report.imageability.total) == (10, 12)
    # 0_right and 3_right make two patients' only other eye: the design effect counts it
    assert report.imageability.interval[0] < wilson_bounds(10 / 12, 12)[0]
    point = AT_PREDICTED_GRADE.name
    assert report.by_image.cases == 10
    assert report.by_image.rates[point]["specificity"].count == 6  # 6 of 6 healthy, gradable
    assert (report.by_patient.cases, report.by_patient.left_out) == (4, 2)
    image, patient = report.population(UNGRADABLE_REFERRED).levels
    assert (image.rates[point]["specificity"].count, image.rates[point]["specificity"].total) \
        == (6, 8)
    assert image.rates[point]["sensitivity"].value == 1.0
    assert (patient.rates[point]["specificity"].count,
            patient.rates[point]["specificity"].total) == (2, 4)
    metrics = report.metrics("test")
    assert metrics["test_imageability_selected"] == pytest.approx(10 / 12)
    refer_key = screening_key("specificity", UNGRADABLE_REFERRED, point="at_predicted_grade")
    assert refer_key == "test_referable_specificity_at_predicted_grade_ungradable_refer_selected"
    assert metrics[refer_key] == 0.75
    assert metrics["test_gradable_referable_specificity_at_predicted_grade_selected"] == 1.0
    text = screening_markdown(report)
    assert "Imageability 83.3 (10/12)" in text and "not gradable = refer" in text


def test_a_set_with_no_gradable_photograph_reports_its_imageability_not_a_crash():
    test = frame([("1_left", 0, 0.1), ("1_right", 3, 0.9)]).assign(gradable=[False, False])
    report = screening_report(test, None, 0.9, 0.9)
    assert (report.imageability.count, report.imageability.total) == (0, 2)
    assert np.isnan(report.calibration.referable_brier)
    assert "Imageability 0.0 (0/2)" in screening_markdown(report)


def test_quality_off_makes_every_photograph_count():
    from retino.evaluation.predictions import honouring_quality

    test = frame([("1_left", 0, 0.1), ("1_right", 3, 0.9)]).assign(
        gradable=[True, False], quality_reason=["", "out of focus"])
    assert screening_report(test, None, 0.9, 0.9).imageability.count == 1
    off = honouring_quality(test, "off")
    assert "gradable" not in off and screening_report(off, None, 0.9, 0.9).imageability is None
    assert honouring_quality(test, "heuristic") is test


def test_headline_predict_and_screening_choose_one_threshold_on_gradable_photographs(tmp_path):
    """Validation photographs that are not gradable choose nothing: the headline threshold,
    the one predict flags at and the screening report's are the same."""
    from omegaconf import OmegaConf

    from retino.evaluation.predictions import headline_metrics
    from retino.serving.grader import judgement

    val = frame([(f"{i}_left", g, p) for i, (g, p) in enumerate(
        [(3, 0.9), (2, 0.8), (2, 0.7), (0, 0.2), (0, 0.1), (3, 0.05), (2, 0.02)])])
    val["gradable"] = [True] * 5 + [False, False]  # two referable ones no one could read
    val["quality_reason"] = [""] * 5 + ["out of focus"] * 2
    test = frame([("a_left", 3, 0.6), ("b_left", 0, 0.3)])
    chosen = screening_report(test, val, 0.9, 0.9).points[0].threshold
    assert chosen == pytest.approx(0.7)  # 3 gradable referable: all must be flagged
    assert headline_metrics(test, val, 0.9)["test_referable_threshold_selected"] == chosen
    val.to_csv(tmp_path / "predictions_val.csv", index=False)
    cfg = OmegaConf.create({"referable_sensitivity_target": 0.9})
    judged = judgement(cfg, tmp_path / "predictions_val.csv")
    assert (judged["threshold"], judged["threshold_chosen"]) == (chosen, True)


def test_a_patient_whose_referable_eye_is_not_gradable_is_never_a_true_negative():
    """Patient 1's referable eye could not be read, their other eye is healthy. Built from the
    gradable eyes alone they were a non-referable patient, unflagged: a true negative (the
    defect). Now they are left out of the gradable rows and referred (a true positive) in the
    "not gradable = refer" rows; in "all photographs" they are referable."""
    test = frame([("1_left", 0, 0.1), ("1_right", 3, 0.2),
                  ("2_left", 0, 0.1), ("2_right", 0, 0.2),
                  ("3_left", 2, 0.9), ("3_right", 0, 0.1)])
    test["gradable"] = [True, False, True, True, True, True]
    report = screening_report(test, None, 0.9, 0.9)
    point = AT_PREDICTED_GRADE.name
    gradable = report.population(GRADABLE_PHOTOGRAPHS).level("patient")
    assert (gradable.cases, gradable.referable, gradable.left_out) == (2, 1, 1)
    assert gradable.rates[point]["specificity"].total == 1  # patient 2 only
    referred = report.population(UNGRADABLE_REFERRED).level("patient").rates[point]
    assert (referred["sensitivity"].count, referred["sensitivity"].total) == (2, 2)
    everything = report.population(ALL_PHOTOGRAPHS).level("patient").rates[point]
    assert (everything["sensitivity"].count, everything["sensitivity"].total) == (1, 2)
    assert "1 patients with a photograph not gradable left out" in screening_markdown(report)


def test_a_perfect_sensitivity_gets_an_interval_that_rests_on_the_patients():
    """40 referable eyes of 20 patients, all flagged: the bootstrap said [100.0, 100.0]. The
    interval reaches below 100 %, as far as Wilson's over the 20 patients (eyes of one patient
    tell no more than one eye about a model that finds them together)."""
    rows = [(f"{p}_{eye}", 3, 0.9) for p in range(20) for eye in ("left", "right")]
    rows += [(f"{p}_{eye}", 0, 0.1) for p in range(20, 60) for eye in ("left", "right")]
    report = screening_report(frame(rows), None, 0.9, 0.9)
    point = AT_PREDICTED_GRADE.name
    for level, cases in ((report.by_image, 40), (report.by_patient, 20)):
        sens = level.rates[point]["sensitivity"]
        assert (sens.count, sens.total) == (cases, cases)
        low, high = sens.interval
        assert high == 1.0 and low == pytest.approx(wilson_bounds(1.0, 20)[0])  # 0.839
        assert level.auc == 1.0 and level.auc_interval[0] < 1.0
    assert "100.0 (40/40) [83.9, 100.0]" in screening_markdown(report)


def test_the_patient_rows_use_an_operating_point_chosen_on_validation_patients():
    """The worse eye's score is the higher of two: a patient is flagged more often than an
    image at one threshold, and the image threshold's validation specificity over patients
    falls short of its target. Chosen on the validation patients, it holds there."""
    def sample(seed):
        r = np.random.default_rng(seed)
        grades = r.choice([0, 0, 0, 0, 2], 400)
        scores = np.clip(np.where(grades >= 2, 0.6, 0.35) + r.normal(0, 0.15, 400), 0, 1)
        return frame([(f"{i // 2}_{('left', 'right')[i % 2]}", g, p)
                      for i, (g, p) in enumerate(zip(grades, scores, strict=True))])
    val, test = sample(3), sample(4)
    report = screening_report(test, val, 0.9, 0.9)
    image_point, patient_point = report.points[1], report.patient_points[1]
    assert patient_point.name == image_point.name == "specificity target"
    patients = worse_eye(val)
    healthy = patients.loc[patients["grade"] < 2, "p_referable"]
    assert (healthy < image_point.threshold).mean() < 0.9  # the defect, on validation patients
    assert (healthy < patient_point.threshold).mean() >= 0.9  # its own target, where chosen
    assert "over validation patients" in screening_markdown(report)


def test_a_validation_patient_with_an_eye_not_gradable_chooses_no_patient_point():
    """Validation's only referable eye belongs to a patient whose other photograph is not
    gradable: the images choose a sensitivity target, the patients cannot, and the page says
    what it has (it raised KeyError when the flow looked up the image point's name)."""
    val = frame([("1_left", 3, 0.9), ("1_right", 0, 0.1), ("2_left", 0, 0.2),
                 ("2_right", 0, 0.3), ("3_left", 0, 0.1), ("3_right", 0, 0.2)])
    val["gradable"] = [True, False, True, True, True, True]
    test = frame([("7_left", 2, 0.8), ("7_right", 0, 0.2), ("8_left", 0, 0.1),
                  ("8_right", 0, 0.4)])
    test["gradable"] = True
    report = screening_report(test, val, 0.9, 0.9)
    assert [p.name for p in report.points] == ["sensitivity target", "specificity target"]
    assert [p.name for p in report.patient_points] == ["specificity target"]
    text = screening_markdown(report)
    assert "at the specificity target:" in text and "at the sensitivity target:" in text


def test_one_more_miss_never_narrows_the_interval():
    """Two eyes of 100 referable patients, misses in different patients: the design effect
    is taken at its worst when no patient decides it and at its estimate from five; a cliff
    between the two gave 5 misses a higher lower bound than 4."""
    from retino.evaluation.intervals import proportion_interval

    patients = np.repeat(np.arange(100), 2)
    lows = []
    for misses in range(10):
        found = np.ones(200, bool)
        found[np.arange(misses) * 2] = False
        lows.append(proportion_interval(found, patients)[0])
    assert all(later < earlier for earlier, later in zip(lows, lows[1:], strict=False))


def test_a_threshold_above_a_kept_score_is_printed_as_strictly_above_it():
    """The specificity target sits just above the highest healthy score it must leave
    unflagged (0.4): "≥ 0.4000" claimed that 0.4 is flagged, and it is not."""
    val = frame([(f"{i}_left", 0, p) for i, p in enumerate([0.1, 0.2, 0.3, 0.4])]
                + [("9_left", 3, 0.9)])
    report = screening_report(val, val, 0.9, 1.0)
    point = report.points[1]
    assert point.rule == "> 0.4" and not 0.4 >= point.threshold
    assert "P(referable) > 0.4 (validation specificity ≥ 1" in screening_markdown(report)


def test_the_three_named_sensitivities_are_the_same_in_the_page_and_the_metrics():
    test = frame([(f"{p}_{eye}", g, s) for p, (g, s, ok) in enumerate(
        [(3, 0.9, True), (2, 0.3, True), (3, 0.8, False), (0, 0.1, True), (0, 0.7, False),
         (0, 0.2, True)]) for eye, g, s in (("left", g, s), ("right", 0, 0.1))])
    test["gradable"] = [i not in (4, 8) for i in range(len(test))]
    report = screening_report(test, None, 0.9, 0.9)
    metrics = report.metrics("test")
    text = screening_markdown(report)
    point = AT_PREDICTED_GRADE
    for population in (GRADABLE_PHOTOGRAPHS, ALL_PHOTOGRAPHS, UNGRADABLE_REFERRED):
        for level in report.population(population).levels:
            sens = level.rates[point.name]["sensitivity"]
            key = screening_key("sensitivity", population, level.level, point.suffix)
            assert metrics[key] == sens.value
            assert metrics[key.replace("_selected", "_selected_ci_low")] == sens.interval[0]
            where = "patient (worse eye)" if level.level == "patient" else "image"
            assert f"| {population} | {where} | {point.name} | " \
                f"{100 * sens.value:.1f} ({sens.count}/{sens.total})" in text


def test_calibration_slope_and_intercept_tell_calibrated_from_overconfident():
    from retino.evaluation.screening import calibration_slope_intercept

    r = np.random.default_rng(0)
    p = r.uniform(0.02, 0.98, 20000)
    outcome = r.random(20000) < p  # what is predicted happens as often as predicted
    slope, intercept = calibration_slope_intercept(outcome, p)
    assert slope == pytest.approx(1, abs=0.05) and intercept == pytest.approx(0, abs=0.05)
    logit = np.log(p / (1 - p))
    overconfident = 1 / (1 + np.exp(-2 * logit))  # twice as extreme as the truth
    assert calibration_slope_intercept(outcome, overconfident)[0] == pytest.approx(0.5, abs=0.05)
    assert np.isnan(calibration_slope_intercept(np.ones(5, bool), p[:5])[0])


def test_ppv_and_npv_at_a_programmes_prevalence_follow_bayes_rule():
    from retino.evaluation.screening import Proportion, at_prevalence, programme_values

    ppv, npv = at_prevalence(0.9, 0.9, 0.07)
    assert ppv == pytest.approx(0.063 / (0.063 + 0.093))
    assert npv == pytest.approx(0.837 / (0.837 + 0.007))
    at_half = at_prevalence(0.8, 0.7, 0.5)  # at 50 %: PPV = sens / (sens + 1 - spec)
    assert at_half[0] == pytest.approx(0.8 / 1.1)
    rates = {"sensitivity": Proportion(90, 100, (0.82, 0.95)),
             "specificity": Proportion(180, 200, (0.85, 0.93))}
    value, low, high = programme_values(rates, 0.07)["ppv"]
    assert value == pytest.approx(ppv) and low < value < high


def test_the_sample_size_is_the_fewest_patients_for_the_half_width():
    from retino.evaluation.screening import patients_needed

    n = patients_needed(0.9)
    half = [np.subtract(*wilson_bounds(0.9, k)[::-1]) / 2 for k in (n - 1, n)]
    assert half[0] > 0.05 >= half[1]
    assert 130 < n < 150  # the textbook 1.96² × 0.9 × 0.1 / 0.05² = 138


def test_the_decision_curve_meets_refer_everyone_below_every_probability():
    from retino.evaluation.metrics import net_benefit

    referable = np.array([1, 1, 0, 0, 0], bool)
    probability = np.array([0.9, 0.6, 0.5, 0.3, 0.2])
    thresholds = np.array([0.1, 0.55, 0.95])
    benefit = net_benefit(referable, probability, thresholds)
    assert benefit[0] == pytest.approx(0.4 - 0.6 * 0.1 / 0.9)  # everyone referred
    assert benefit[1] == pytest.approx(0.4)  # both referable, no one else
    assert benefit[2] == 0  # no one referred


def test_the_page_reads_as_a_reviewer_asks_flow_recall_prevalence_and_sample_size():
    rows = [(f"{p}_{eye}", g, s) for p, (g, s) in enumerate(
        [(0, 0.1), (0, 0.2), (3, 0.9), (0, 0.3), (2, 0.8), (0, 0.1), (1, 0.4), (4, 0.95)])
        for eye in ("left", "right")]
    test = frame(rows)
    test["gradable"] = [i != 3 for i in range(len(test))]  # 1_right
    report = screening_report(test, None, 0.9, 0.9, programme_prevalence=0.07)
    text = screening_markdown(report)
    assert "- 16 photographs of 8 patients in the test split" in text
    assert "- 15 gradable, 1 not gradable; 7 patients with every photograph gradable, 1 with " \
        "one not" in text
    assert "gradable photographs, images: 6 referable, 9 not (reference grade ≥ 2); at the " \
        "predicted grade: 6 true positives, 0 false negatives" in text
    assert "At a programme prevalence of 7.0 % (`programme_prevalence`)" in text
    assert "Sample size: the predicted grade's sensitivity, 100.0 % over 3 referable patients" \
        in text
    assert "Recall per grade %, gradable photographs (k/n) [95 %]: grade 0 100.0 (7/7)" in text
    assert "slope" in text and "intercept" in text
