"""Intervals: how far a number could move with another sample of patients, or another seed.

A percentile bootstrap over patients (a patient's eyes are drawn together: they are not
independent images), the same bootstrap of the mean over a configuration's seeds (patients and
seeds resampled together), a paired bootstrap of the difference between two configurations on
the same test images, and the t interval over seeds (the run-to-run noise of training).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from retino.core.grades import REFERABLE_GRADE
from retino.evaluation.metrics import quadratic_weighted_kappa, referable_auc, referable_scores

# true grade, predicted grade, referable score (P(referable), or a regression head's output)
Answers = tuple[np.ndarray, np.ndarray, np.ndarray]
INTERVAL_METRICS = ("acc", "qwk", "referable_auc")  # the metrics given intervals


def answers(frame: pd.DataFrame) -> Answers:
    """A predictions frame as arrays, which a bootstrap indexes a thousand times."""
    return frame["grade"].to_numpy(), frame["predicted"].to_numpy(), referable_scores(frame)


def interval_statistics(given: Answers, rows: np.ndarray) -> dict[str, float]:
    """The metrics given intervals, on these rows: accuracy, quadratic weighted kappa,
    referable-DR AUC; nan where a resample leaves one undefined (counted, never scored 0)."""
    true, pred, score = (column[rows] for column in given)
    return {"acc": float(np.mean(true == pred)),
            "qwk": quadratic_weighted_kappa(true, pred, undefined=np.nan),
            "referable_auc": referable_auc(true >= REFERABLE_GRADE, score)}


def patient_rows(frame: pd.DataFrame) -> list[np.ndarray]:
    """Row numbers of each patient's images (both eyes together)."""
    codes, uniques = pd.factorize(frame["patient"])
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


MIN_REFERABLE_PATIENTS = 10  # below this, an AUC interval would rest on a handful of people


def referable_patients(frame: pd.DataFrame) -> int:
    """Patients with at least one referable eye (grade >= 2): the positives an AUC rests on."""
    return int(frame.loc[frame["grade"] >= REFERABLE_GRADE, "patient"].nunique())


def _interval_keys(samples: list[dict[str, float]], prefix: str, positives: int,
                   level: float) -> dict[str, float]:
    """`<prefix><metric>_ci_low`, `_ci_high` and `_ci_undefined_rounds` (resamples in which the
    metric was undefined: left out of the interval, and said so); no AUC interval below
    MIN_REFERABLE_PATIENTS referable patients."""
    intervals = {}
    for name in INTERVAL_METRICS:
        values = np.array([sample[name] for sample in samples], float)
        low, high = percentile_interval(values, level)
        if name == "referable_auc" and positives < MIN_REFERABLE_PATIENTS:
            low = high = np.nan
        intervals |= {f"{prefix}{name}_ci_low": low, f"{prefix}{name}_ci_high": high,
                      f"{prefix}{name}_ci_undefined_rounds": int(np.isnan(values).sum())}
    return intervals


def bootstrap_intervals(frame: pd.DataFrame, prefix: str, rounds: int, seed: int = 0,
                        level: float = 0.95) -> dict[str, float]:
    """Percentile intervals of accuracy, kappa and referable AUC over `rounds` resamples of the
    patients (see _interval_keys), and `<prefix>referable_patients`."""
    given = answers(frame)
    samples = [interval_statistics(given, rows) for rows in resampled_rows(frame, rounds, seed)]
    positives = referable_patients(frame)
    return {**_interval_keys(samples, prefix, positives, level),
            f"{prefix}referable_patients": positives}


def same_images(frames: Sequence[pd.DataFrame]) -> list[pd.DataFrame]:
    """The frames with their rows in the first one's image order; ValueError when they do not
    hold the same test images with the same true grades (a paired comparison needs the same
    labelled photographs)."""
    order = frames[0]["image"]
    aligned = []
    for frame in frames:
        if len(frame) != len(order) or set(frame["image"]) != set(order):
            raise ValueError("the runs were tested on different images")
        aligned.append(frame.set_index("image").loc[order].reset_index())
    truth = aligned[0]["grade"].to_numpy()
    differ = max(int((frame["grade"].to_numpy() != truth).sum()) for frame in aligned)
    if differ:
        raise ValueError(f"the runs' true grades differ on {differ} images of the same names: "
                         "they were tested on differently labelled sets")
    return aligned


def mean_statistics(runs: Sequence[Answers], rows: np.ndarray) -> dict[str, float]:
    """Accuracy, kappa and referable AUC averaged over runs (seeds), on the same rows."""
    values = [interval_statistics(run, rows) for run in runs]
    return {name: float(np.mean([value[name] for value in values]))
            for name in INTERVAL_METRICS}


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
    """metric -> (low, high) of the mean over a configuration's seeds, keeping the test set's
    sampling error: each round resamples the test patients (the same draws as one run's
    bootstrap_intervals) and the seeds, both with replacement, and averages the drawn seeds on
    the drawn rows. Seeds that agree give exactly one run's interval; seeds that disagree widen
    it. (A t interval over seeds alone drops the test set's error: more seeds made it narrower
    than a single run's.) ValueError when the seeds were tested on different images."""
    runs = [answers(frame) for frame in same_images(frames)]
    pick = np.random.default_rng([seed, 1])  # the seeds' draws, apart from the patients'
    samples = [mean_statistics([runs[i] for i in pick.integers(0, len(runs), len(runs))], rows)
               for rows in resampled_rows(frames[0], rounds, seed)]
    keys = _interval_keys(samples, "", referable_patients(frames[0]), level)
    return {name: (keys[f"{name}_ci_low"], keys[f"{name}_ci_high"])
            for name in INTERVAL_METRICS}
