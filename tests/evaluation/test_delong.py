"""DeLong's test against the pROC package's published values, and Holm's adjustment."""

import numpy as np
import pytest

from retino.evaluation.delong import delong_test, holm_adjusted

# pROC's aSAH data (Turck et al. 2010; shipped with pROC, Robin et al. 2011, BMC Bioinformatics
# 12:77), in its row order: outcome Poor = 1, the S100B level, the WFNS grade (1-5), NDKA.
ASAH_POOR = [0, 0, 0, 0, 1, 1, 0, 1, 0, 0, 1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0,
             0, 0, 0, 0, 1, 0, 0, 1, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 0,
             0, 0, 1, 0, 1, 0, 0, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1, 1, 0, 0, 0, 1, 1, 0, 1, 0, 0, 0,
             0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0, 0]
ASAH_S100B = [0.13, 0.14, 0.1, 0.04, 0.13, 0.1, 0.47, 0.16, 0.18, 0.1, 0.12, 0.1, 0.44, 0.71,
              0.04, 0.08, 0.49, 0.04, 0.07, 0.33, 0.09, 0.09, 0.07, 0.11, 0.07, 0.17, 0.07, 0.11,
              0.13, 0.19, 0.05, 0.16, 0.41, 0.14, 0.34, 0.35, 0.48, 0.09, 0.96, 0.25, 0.5, 0.46,
              0.16, 0.07, 0.43, 0.45, 0.11, 0.08, 0.09, 0.86, 0.52, 0.08, 0.06, 0.13, 2.07, 0.1,
              0.14, 0.15, 0.07, 0.06, 0.77, 0.05, 0.09, 0.3, 0.03, 0.09, 0.04, 0.23, 0.7, 0.09,
              0.27, 0.71, 0.08, 0.26, 0.08, 0.16, 0.09, 0.13, 0.1, 0.08, 0.11, 0.33, 0.11, 0.28,
              0.07, 0.1, 0.32, 0.22, 0.07, 0.05, 0.24, 0.38, 0.1, 0.15, 0.08, 0.14, 0.1, 0.07,
              0.04, 0.19, 0.56, 0.14, 0.58, 0.32, 0.82, 0.74, 0.15, 0.47, 0.17, 0.44, 0.15, 0.5,
              0.48]
ASAH_WFNS = [1, 1, 1, 1, 3, 2, 5, 4, 1, 2, 5, 2, 5, 5, 1, 2, 5, 2, 2, 5, 2, 1, 1, 1, 1, 2, 1, 2,
             1, 1, 3, 4, 2, 1, 4, 5, 4, 1, 4, 2, 5, 5, 1, 1, 2, 4, 1, 1, 2, 5, 5, 2, 1, 2, 5, 1,
             2, 2, 2, 1, 5, 1, 1, 2, 5, 2, 1, 4, 5, 2, 4, 4, 1, 4, 1, 2, 1, 4, 2, 1, 2, 3, 2, 4,
             2, 1, 4, 5, 1, 1, 5, 4, 2, 2, 1, 1, 1, 3, 1, 2, 5, 2, 2, 5, 5, 5, 2, 4, 4, 5, 1, 1, 1]
ASAH_NDKA = [3.01, 8.54, 8.09, 10.42, 17.4, 12.75, 6.0, 13.2, 15.54, 6.01, 15.96, 17.86, 5.18,
             8.9, 13.41, 20.75, 11.6, 16.11, 32.37, 54.82, 32.41, 49.94, 40.34, 9.47, 6.29,
             12.53, 6.54, 6.3, 80.3, 12.8, 9.8, 9.81, 9.85, 18.21, 5.03, 14.04, 21.93, 8.02,
             7.42, 8.38, 6.59, 9.63, 13.12, 7.96, 14.34, 41.43, 7.63, 7.06, 12.59, 13.56, 3.87,
             9.44, 7.66, 12.98, 419.19, 27.19, 22.27, 9.95, 21.22, 11.73, 10.4, 58.83, 6.39,
             11.09, 12.22, 13.67, 17.21, 22.63, 12.9, 9.7, 21.57, 8.23, 72.57, 15.54, 10.51,
             10.6, 14.57, 5.19, 9.63, 4.61, 21.48, 17.3, 12.71, 9.44, 11.07, 19.46, 10.83, 5.37,
             11.97, 7.75, 9.83, 10.55, 28.49, 8.53, 12.57, 12.9, 46.83, 11.68, 12.67, 9.01, 9.57,
             34.06, 11.72, 14.26, 47.61, 11.67, 24.58, 10.33, 13.87, 15.89, 22.43, 6.79, 13.45]


def test_delong_reproduces_pROC_on_its_aSAH_data():
    """pROC's tests (xrobin/pROC, tests/testthat: test-auc.R, test-var.R, test-cov.R,
    test-roc.test.R): roc.test(wfns, s100b) gives Z 2.20898359144091, p 0.0271757822291882 and
    the difference's interval [0.0104061769564846, 0.174214419249478]. The WFNS grade is full of
    ties, so this also checks how ties count."""
    result = delong_test(ASAH_POOR, ASAH_S100B, ASAH_WFNS)
    assert result.auc_a == pytest.approx(0.731368563685637, rel=1e-12)
    assert result.auc_b == pytest.approx(0.823678861788618, rel=1e-12)
    assert result.covariance[0, 0] == pytest.approx(0.00266868245717244, rel=1e-10)
    assert result.covariance[1, 1] == pytest.approx(0.00146991470882363, rel=1e-10)
    assert result.covariance[0, 1] == pytest.approx(0.00119615567376754, rel=1e-10)
    assert result.z == pytest.approx(2.20898359144091, rel=1e-10)
    assert result.p == pytest.approx(0.0271757822291882, rel=1e-10)
    assert result.difference_interval() == pytest.approx(
        (0.0104061769564846, 0.174214419249478), rel=1e-9)
    assert delong_test(ASAH_POOR, ASAH_NDKA, ASAH_WFNS).z == pytest.approx(2.79777591868904,
                                                                            rel=1e-10)
    swapped = delong_test(ASAH_POOR, ASAH_S100B, ASAH_NDKA)  # ndka - s100b: -1.39077002573558
    assert swapped.z == pytest.approx(-1.39077002573558, rel=1e-10)
    assert swapped.p == pytest.approx(0.164295175223054, rel=1e-10)


def test_the_same_scores_twice_differ_by_nothing():
    result = delong_test(ASAH_POOR, ASAH_S100B, ASAH_S100B)
    assert (result.z, result.p) == (0.0, 1.0)


def test_delong_refuses_cases_of_one_kind():
    with pytest.raises(ValueError, match="two positive and two negative"):
        delong_test([1, 1, 1], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])
    with pytest.raises(ValueError, match="two positive and two negative"):  # a nan variance
        delong_test([1, 0, 0, 0], [0.9, 0.2, 0.3, 0.1], [0.8, 0.1, 0.2, 0.3])


def test_holm_steps_down_and_keeps_the_order():
    # Sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> 0.06 (monotone)
    assert holm_adjusted([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjusted([0.5, 0.9]) == [1.0, 1.0]  # capped at 1
    adjusted = holm_adjusted([0.01, np.nan, 0.02])  # nan is not a test: m = 2
    assert adjusted[0] == pytest.approx(0.02) and np.isnan(adjusted[1])
    assert adjusted[2] == pytest.approx(0.02)


def test_every_case_its_own_patient_is_delongs_test():
    from retino.evaluation.delong import mean_auc_test

    plain = delong_test(ASAH_POOR, ASAH_S100B, ASAH_WFNS)
    clustered = delong_test(ASAH_POOR, ASAH_S100B, ASAH_WFNS, clusters=range(len(ASAH_POOR)))
    one_run_each = mean_auc_test(ASAH_POOR, [ASAH_S100B], [ASAH_WFNS])
    for other in (clustered, one_run_each):
        assert (other.z, other.p) == pytest.approx((plain.z, plain.p), rel=1e-9)
        assert other.covariance == pytest.approx(plain.covariance, rel=1e-9)


def _two_eyes(rng, patients=100):
    """One study of `patients` people with two eyes each: disease and both models' errors
    shared by a person's eyes; the two models equally good."""
    severity = rng.normal(size=patients)[:, None] + 0.5 * rng.normal(size=(patients, 2))
    positive = (severity > 0.8).ravel()

    def model():
        shared_error = np.repeat(rng.normal(size=patients), 2)
        return severity.ravel() + shared_error + 0.3 * rng.normal(size=2 * patients)
    return positive, model(), model(), np.repeat(np.arange(patients), 2)


def test_eyes_of_one_patient_are_counted_together():
    """Equally good models, errors shared by a patient's eyes: taking eyes as independent
    rejects about twice as often as it says (the defect); clustered by patient, at 5 %."""
    rng = np.random.default_rng(1)
    studies = [_two_eyes(rng) for _ in range(1000)]
    independent = np.mean([delong_test(*study[:3]).p < 0.05 for study in studies])
    clustered = np.mean([delong_test(*study).p < 0.05 for study in studies])
    assert independent > 0.08 and clustered <= 0.06


def test_unequal_seeds_test_the_mean_auc_difference_they_print():
    """Three seeds against one of equally good configurations: the AUC of seed-averaged scores
    (a seed ensemble) beats one model and rejected in most studies; the mean of the seeds'
    AUCs against the one seed's rejects at 5 %, and its difference is the one printed."""
    from retino.evaluation.delong import mean_auc_test
    from retino.evaluation.metrics import referable_auc

    rng = np.random.default_rng(2)
    ensemble_rejects, mean_rejects = [], []
    for _ in range(300):
        truth = rng.normal(size=300)
        positive = truth > 1.0
        runs = [truth + rng.normal(size=300) for _ in range(4)]  # each seed its own errors
        many, one = runs[:3], runs[3:]
        ensemble_rejects.append(delong_test(positive, np.mean(many, axis=0), one[0]).p < 0.05)
        test = mean_auc_test(positive, many, one)
        mean_rejects.append(test.p < 0.05)
        mean_auc = np.mean([referable_auc(positive, run) for run in many])
        assert (test.auc_a, test.auc_b) == pytest.approx((mean_auc, referable_auc(positive,
                                                                                   one[0])))
        assert np.sign(test.z) == np.sign(test.difference)
    assert np.mean(ensemble_rejects) > 0.5 and np.mean(mean_rejects) <= 0.06


def test_the_clustered_variance_is_what_resampling_patients_gives():
    """Obuchowski's estimator against a bootstrap of whole patients on one study of 150
    patients (mostly two eyes): their variances and covariance agree within 10 % of the
    variances."""
    from retino.evaluation.delong import auc_covariance
    from retino.evaluation.metrics import referable_auc

    rng = np.random.default_rng(4)
    positive, a, b, patients = _two_eyes(rng, patients=150)
    keep = np.ones(len(positive), bool)
    keep[rng.choice(len(positive) // 2, 20, replace=False) * 2] = False  # some patients, one eye
    positive, a, b, patients = positive[keep], a[keep], b[keep], patients[keep]
    _, covariance = auc_covariance(positive, np.stack([a, b]), patients)
    rows = [np.flatnonzero(patients == p) for p in np.unique(patients)]
    draws = []
    for _ in range(3000):
        picked = np.concatenate([rows[i] for i in rng.integers(0, len(rows), len(rows))])
        draws.append([referable_auc(positive[picked], score[picked]) for score in (a, b)])
    resampled = np.cov(np.array(draws).T)
    assert np.abs(covariance - resampled).max() < 0.1 * np.diag(resampled).max()
    independent = auc_covariance(positive, np.stack([a, b]))[1]  # eyes as if unrelated
    assert np.abs(independent - resampled).max() > 0.2 * np.diag(resampled).max()
