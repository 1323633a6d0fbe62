"""Intervals: how far a number could move with another sample of patients, or another seed.

A patient's eyes are not independent images, so every interval counts them together:
- a share (accuracy, sensitivity, imageability): Wilson's score interval over the cases divided
  by their design effect; an AUC: Wilson's score form over its effective number of cases, from
  DeLong's variance clustered by patient (Obuchowski). Neither collapses at 0 % or 100 %, where
  a bootstrap says [100, 100];
- kappa: a percentile bootstrap over patients;
- the mean over a configuration's seeds: the test set's variance and the seeds' together;
- the difference between two configurations on the same images: a paired bootstrap over
  patients, with its p; and the t interval over seeds (the run-to-run noise of training).
The coverage of each is measured by simulation in bench/interval_coverage.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
from scipy.stats import norm
from scipy.stats import t as student_t

from retino.core.grades import (
    GRADE_COLUMN,
    IMAGE_COLUMN,
    PATIENT_COLUMN,
    PREDICTED_COLUMN,
    REFERABLE_GRADE,
)
from retino.evaluation.delong import auc_covariance
from retino.evaluation.metrics import quadratic_weighted_kappa, referable_auc, referable_scores

# true grade, predicted grade, referable score (P(referable), or a regression head's output)
Answers = tuple[np.ndarray, np.ndarray, np.ndarray]
INTERVAL_METRICS = ("acc", "qwk", "referable_auc")  # the metrics given intervals


def answers(frame: pd.DataFrame) -> Answers:
    """A predictions frame as arrays, which a bootstrap indexes a thousand times."""
    return (frame[GRADE_COLUMN].to_numpy(), frame[PREDICTED_COLUMN].to_numpy(),
            referable_scores(frame))


def interval_statistics(given: Answers, rows: np.ndarray,
                        names: Sequence[str] = INTERVAL_METRICS) -> dict[str, float]:
    """The metrics given intervals (or those named), on these rows: accuracy, quadratic
    weighted kappa, referable-DR AUC; nan where a resample leaves one undefined (counted, never
    scored 0)."""
    true, pred, score = (column[rows] for column in given)
    measures = {"acc": lambda: float(np.mean(true == pred)),
                "qwk": lambda: quadratic_weighted_kappa(true, pred, undefined=np.nan),
                "referable_auc": lambda: referable_auc(true >= REFERABLE_GRADE, score)}
    return {name: measures[name]() for name in names}


def patient_rows(frame: pd.DataFrame) -> list[np.ndarray]:
    """Row numbers of each patient's images (both eyes together)."""
    codes, uniques = pd.factorize(frame[PATIENT_COLUMN])
    order = np.argsort(codes, kind="stable")
    return np.split(order, np.cumsum(np.bincount(codes, minlength=len(uniques)))[:-1])


def resampled_rows(frame: pd.DataFrame, rounds: int, seed: int) -> Iterator[np.ndarray]:
    """Row numbers of `rounds` resamples of the patients with replacement, seeded: a patient's
    eyes are not independent images, so they are drawn together."""
    groups = patient_rows(frame)
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        yield np.concatenate([groups[i] for i in rng.integers(0, len(groups), len(groups))])


def percentile_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """The central `level` of bootstrap values (nan where every resample was undefined)."""
    if np.all(np.isnan(values)):
        return np.nan, np.nan
    low, high = np.nanpercentile(values, (100 * (1 - level) / 2, 100 * (1 + level) / 2))
    return float(low), float(high)


def wilson_bounds(share: float, cases: float, level: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a share observed over `cases` (a real number: an effective
    size); nan for no cases. Never of zero width: at 0 % or 100 % it still reaches inwards."""
    if not cases > 0 or np.isnan(share):
        return np.nan, np.nan
    z2 = norm.ppf((1 + level) / 2) ** 2
    centre = (share + z2 / (2 * cases)) / (1 + z2 / cases)
    half = np.sqrt(z2 * share * (1 - share) / cases + z2 ** 2 / (4 * cases ** 2)) \
        / (1 + z2 / cases)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


MIN_DECIDING_PATIENTS = 5  # fewer patients hold the rarer outcome: their agreement is unknown


def _cluster_sizes(values: np.ndarray, clusters: Sequence | None) -> tuple[np.ndarray, ...]:
    """(cases per cluster, sum of the values per cluster)."""
    if clusters is None:
        return np.ones(len(values)), values.astype(float)
    codes = pd.factorize(pd.Series(list(clusters)))[0]
    return (np.bincount(codes).astype(float),
            np.bincount(codes, weights=values.astype(float)))


def design_effect(hits: np.ndarray, clusters: Sequence | None) -> float:
    """How many times the variance of a share is that of independent cases, because a
    patient's eyes tend to agree: the cluster-robust variance over the binomial one, at least
    1. The patients holding the rarer outcome decide it: with none (0 % or 100 %) it cannot be
    estimated and is taken at its worst, eyes that always agree (the case-weighted mean number
    of cases per patient); with fewer than MIN_DECIDING_PATIENTS it is drawn from that worst
    towards the estimate in step with their number (a cliff at 5 made one more miss give a
    narrower interval)."""
    hits = np.asarray(hits, bool)
    sizes, counts = _cluster_sizes(hits, clusters)
    worst = float((sizes ** 2).sum() / sizes.sum())
    share = hits.mean()
    deciding = min(np.count_nonzero(counts > 0), np.count_nonzero(counts < sizes))
    patients = len(sizes)
    if deciding == 0 or patients < 2:  # nothing to estimate the patients' agreement from
        return worst
    robust = patients / (patients - 1) * ((counts - sizes * share) ** 2).sum() / len(hits) ** 2
    estimated = max(1.0, robust / (share * (1 - share) / len(hits)))
    weight = max(0.0, 1 - deciding / MIN_DECIDING_PATIENTS)  # 1 with none deciding, 0 from 5
    return max(estimated, weight * worst + (1 - weight) * estimated)


def effective_cases(hits: Sequence[bool], clusters: Sequence | None = None) -> float:
    """The number of independent cases a share's precision is worth: the cases over their
    design effect."""
    hits = np.asarray(hits, bool)
    return len(hits) / design_effect(hits, clusters) if len(hits) else 0.0


def proportion_interval(hits: Sequence[bool], clusters: Sequence | None = None,
                        level: float = 0.95) -> tuple[float, float]:
    """The interval of the share of hits: Wilson's score interval over the cases divided by
    their design effect (a patient's eyes counted together); never of zero width, and at 0 %
    and 100 % it rests on the patients, not the eyes."""
    hits = np.asarray(hits, bool)
    if not len(hits):
        return np.nan, np.nan
    return wilson_bounds(float(hits.mean()), effective_cases(hits, clusters), level)


def _hanley_mcneil_variance(auc: float, positives: int, negatives: int) -> float:
    """The variance of an AUC over so many positive and negative cases under Hanley & McNeil's
    (1982) exponential model: what an AUC near 1 varies by although every pair in the sample
    is ordered (where DeLong's estimate is 0)."""
    q1, q2 = auc / (2 - auc), 2 * auc ** 2 / (1 + auc)
    return (auc * (1 - auc) + (positives - 1) * (q1 - auc ** 2)
            + (negatives - 1) * (q2 - auc ** 2)) / (positives * negatives)


# The floor's share of Hanley & McNeil's variance: their exponential model overstates the
# variance of an AUC near 1 (at the whole of it, AUC 0.99 over 30 referable patients was covered
# 100 % of the time by intervals 2.4 times as wide); at a quarter, coverage measured
# 0.95-0.97 from AUC 0.85 to 0.99 (bench/interval_coverage.py).
HANLEY_MCNEIL_SHARE = 0.25


def auc_effective_cases(positive: Sequence[bool], score: Sequence[float],
                        clusters: Sequence | None = None) -> tuple[float, float]:
    """(referable AUC, the number of independent cases its precision is worth: AUC × (1 − AUC)
    over its variance), the variance DeLong's with a patient's eyes counted together
    (Obuchowski), never below a share of Hanley & McNeil's over the positive and negative
    patients (HANLEY_MCNEIL_SHARE); (nan, nan) with fewer than two patients of a kind."""
    positive = np.asarray(positive, bool)
    try:
        [auc], covariance = auc_covariance(positive, np.asarray(score, float)[None], clusters)
    except ValueError:
        return np.nan, np.nan
    sizes, counts = _cluster_sizes(positive, clusters)
    with_positive, with_negative = np.count_nonzero(counts > 0), np.count_nonzero(counts < sizes)
    near = float(np.clip(auc, 1e-6, 1 - 1e-6))  # the model's variance is 0 at exactly 0 or 1
    variance = max(float(covariance[0, 0]),
                   HANLEY_MCNEIL_SHARE * _hanley_mcneil_variance(near, with_positive,
                                                                 with_negative))
    return float(auc), near * (1 - near) / variance


def auc_interval(positive: Sequence[bool], score: Sequence[float],
                 clusters: Sequence | None = None, level: float = 0.95) -> tuple[float, float]:
    """The interval of a referable AUC: Wilson's score form over its effective number of cases
    (auc_effective_cases). It never collapses at AUC 1 (a bootstrap said [1.000, 1.000]); nan
    where the AUC or its variance is undefined."""
    return wilson_bounds(*auc_effective_cases(positive, score, clusters), level)


def two_level_interval(values: Sequence[float], cases: Sequence[float],
                       level: float = 0.95) -> tuple[float, float]:
    """The interval of the mean of a configuration's seeds, each seed's share (accuracy, AUC)
    worth `cases` independent test cases: the test set's variance of the share plus the seeds'
    variance of their mean, the latter scaled by (t / z)² so that with few seeds it is read as
    a t interval would. One seed, or seeds that agree: exactly one run's interval."""
    values, cases = np.asarray(values, float), np.asarray(cases, float)
    if np.isnan(values).any() or np.isnan(cases).any():
        return np.nan, np.nan
    mean, seeds = float(values.mean()), len(values)
    share = min(max(mean, 1e-6), 1 - 1e-6)
    test_variance = share * (1 - share) / cases.mean()
    seed_variance = 0.0
    if seeds > 1:
        inflation = (student_t.ppf((1 + level) / 2, seeds - 1) / norm.ppf((1 + level) / 2)) ** 2
        seed_variance = inflation * values.var(ddof=1) / seeds
    return wilson_bounds(mean, share * (1 - share) / (test_variance + seed_variance), level)


def referable_patients(frame: pd.DataFrame) -> int:
    """Patients with at least one referable eye (grade >= 2): the positives an AUC rests on."""
    return int(frame.loc[frame[GRADE_COLUMN] >= REFERABLE_GRADE, PATIENT_COLUMN].nunique())


def _share_sizes(frame: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """Accuracy and referable AUC, each with the number of independent cases it is worth (a
    patient's eyes counted together)."""
    true, pred, score = answers(frame)
    patients = frame[PATIENT_COLUMN].to_numpy()
    correct = true == pred
    return {"acc": (float(correct.mean()), effective_cases(correct, patients)),
            "referable_auc": auc_effective_cases(true >= REFERABLE_GRADE, score, patients)}


def _kappa_interval(frames: Sequence[pd.DataFrame], prefix: str, rounds: int, seed: int,
                    level: float) -> dict[str, float]:
    """Kappa has no score interval: the percentile bootstrap of the seeds' mean kappa over
    resampled test patients (and resampled seeds, with several), with the resamples where it
    is undefined (one grade everywhere) left out and counted."""
    runs = [answers(frame) for frame in frames]
    pick = np.random.default_rng([seed, 1])  # the seeds' draws, apart from the patients'
    values = np.array([mean_statistics([runs[i] for i in pick.integers(0, len(runs), len(runs))],
                                       rows, ("qwk",))["qwk"]
                       for rows in resampled_rows(frames[0], rounds, seed)], float)
    low, high = percentile_interval(values, level)
    return {f"{prefix}qwk_ci_low": low, f"{prefix}qwk_ci_high": high,
            f"{prefix}qwk_ci_undefined_rounds": int(np.isnan(values).sum())}


def run_intervals(frame: pd.DataFrame, prefix: str, rounds: int, seed: int = 0,
                  level: float = 0.95) -> dict[str, float]:
    """A run's intervals of its test accuracy and referable AUC (score intervals, patients
    clustered: proportion_interval, auc_interval) and of its kappa (_kappa_interval over
    `rounds` resamples), as `<prefix><metric>_ci_low` / `_ci_high`, and
    `<prefix>referable_patients`."""
    return pooled_intervals_keys([frame], prefix, rounds, seed, level) | {
        f"{prefix}referable_patients": referable_patients(frame)}


def pooled_intervals_keys(frames: Sequence[pd.DataFrame], prefix: str, rounds: int,
                          seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """The intervals of the mean over a configuration's seeds (one run: that run's) as keys:
    accuracy and AUC two-level (test patients and seeds: two_level_interval), kappa by the
    bootstrap of patients and seeds. ValueError when the seeds were tested on different
    images."""
    aligned = same_images(frames)
    sizes = [_share_sizes(frame) for frame in aligned]
    keys = _kappa_interval(aligned, prefix, rounds, seed, level)
    for name in ("acc", "referable_auc"):
        values, cases = zip(*(size[name] for size in sizes), strict=True)
        keys[f"{prefix}{name}_ci_low"], keys[f"{prefix}{name}_ci_high"] = \
            two_level_interval(values, cases, level)
    return keys


def same_images(frames: Sequence[pd.DataFrame]) -> list[pd.DataFrame]:
    """The frames with their rows in the first one's image order; ValueError when they do not
    hold the same test images with the same true grades (a paired comparison needs the same
    labelled photographs)."""
    order = frames[0][IMAGE_COLUMN]
    aligned = []
    for frame in frames:
        if len(frame) != len(order) or set(frame[IMAGE_COLUMN]) != set(order):
            raise ValueError("the runs were tested on different images")
        aligned.append(frame.set_index(IMAGE_COLUMN).loc[order].reset_index())
    truth = aligned[0][GRADE_COLUMN].to_numpy()
    differ = max(int((frame[GRADE_COLUMN].to_numpy() != truth).sum()) for frame in aligned)
    if differ:
        raise ValueError(f"the runs' true grades differ on {differ} images of the same names: "
                         "they were tested on differently labelled sets")
    return aligned


def mean_statistics(runs: Sequence[Answers], rows: np.ndarray,
                    names: Sequence[str] = INTERVAL_METRICS) -> dict[str, float]:
    """Accuracy, kappa and referable AUC (or those named) averaged over runs (seeds), on the
    same rows."""
    values = [interval_statistics(run, rows, names) for run in runs]
    return {name: float(np.mean([value[name] for value in values])) for name in names}


def bootstrap_p(differences: Sequence[float]) -> float:
    """The two-sided p of "no difference" from a paired bootstrap's differences: twice the
    smaller share of resamples on either side of 0 (counting the observed sample, so never 0),
    at most 1; the smallest level whose percentile interval excludes 0. nan without resamples."""
    values = np.asarray(differences, float)
    values = values[~np.isnan(values)]
    if not len(values):
        return np.nan
    side = min(np.count_nonzero(values <= 0), np.count_nonzero(values >= 0)) + 1
    return float(min(1.0, 2 * side / (len(values) + 1)))


def paired_differences(before: Sequence[pd.DataFrame], after: Sequence[pd.DataFrame],
                       rounds: int, seed: int = 0
                       ) -> dict[str, tuple[float, float, float, float]]:
    """metric -> (difference, low, high, p): the mean over `after`'s runs (seeds) minus the
    mean over `before`'s, on the same test images, with a 95 % paired bootstrap interval and
    the p of no difference (bootstrap_p): each resample of patients scores both sides, so what
    the two configurations share (the same hard images) cancels out. A mean over seeds, not a
    seed ensemble: unequal numbers of seeds compare like with like."""
    aligned = same_images([*before, *after])
    runs = [answers(frame) for frame in aligned]
    runs_a, runs_b = runs[: len(before)], runs[len(before):]
    everything = np.arange(len(aligned[0]))
    point_a, point_b = mean_statistics(runs_a, everything), mean_statistics(runs_b, everything)
    samples: dict[str, list[float]] = {name: [] for name in INTERVAL_METRICS}
    for rows in resampled_rows(aligned[0], rounds, seed):
        a, b = mean_statistics(runs_a, rows), mean_statistics(runs_b, rows)
        for name in INTERVAL_METRICS:
            samples[name].append(b[name] - a[name])
    return {name: (point_b[name] - point_a[name], *percentile_interval(samples[name]),
                   bootstrap_p(samples[name]))
            for name in INTERVAL_METRICS}


def seed_interval(values: Sequence[float],
                  level: float = 0.95) -> tuple[float, float, float, float]:
    """(mean, std, low, high) over seeds: the t interval of the mean, the run-to-run noise of
    training that no test-set bootstrap shows; std, low and high are nan with one seed."""
    values = np.asarray(values, float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, np.nan, np.nan, np.nan
    std = float(values.std(ddof=1))
    half = float(student_t.ppf((1 + level) / 2, len(values) - 1)) * std / np.sqrt(len(values))
    return mean, std, mean - half, mean + half


def pooled_intervals(frames: Sequence[pd.DataFrame], rounds: int, seed: int = 0,
                     level: float = 0.95) -> dict[str, tuple[float, float]]:
    """metric -> (low, high) of the mean over a configuration's seeds (pooled_intervals_keys):
    the test set's sampling error and the seeds' spread together. (A t interval over seeds
    alone drops the test set's error: more seeds made it narrower than a single run's.)"""
    keys = pooled_intervals_keys(frames, "", rounds, seed, level)
    return {name: (keys[f"{name}_ci_low"], keys[f"{name}_ci_high"])
            for name in INTERVAL_METRICS}
