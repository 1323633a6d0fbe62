"""DeLong's test for two correlated ROC AUCs (the same cases scored twice), and Holm's
adjustment of a study's p-values: what a reviewer asks of "B's AUC is higher than A's".

DeLong, DeLong & Clarke-Pearson (1988), Biometrics 44:837, computed with midranks as in Sun & Xu
(2014), IEEE Signal Processing Letters 21:1389; checked against the pROC package's published
values on its aSAH data (tests/test_delong.py). No well-kept Python library has it: scikit-learn,
SciPy and statsmodels compute AUCs but do not compare two.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, rankdata


@dataclass(frozen=True)
class DeLong:
    """Two AUCs on the same cases, their DeLong covariance, and the test of their difference."""

    auc_a: float
    auc_b: float
    covariance: np.ndarray  # 2 x 2: var(AUC a), cov, var(AUC b)
    z: float  # (auc_b - auc_a) / its standard error
    p: float  # two-sided

    def difference_interval(self, level: float = 0.95) -> tuple[float, float]:
        """The normal interval of auc_b - auc_a."""
        half = norm.ppf((1 + level) / 2) * np.sqrt(self._difference_variance())
        difference = self.auc_b - self.auc_a
        return difference - half, difference + half

    def _difference_variance(self) -> float:
        c = self.covariance
        return float(c[0, 0] + c[1, 1] - 2 * c[0, 1])


def _placements(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components of one score: per positive case, the share of negatives
    it outranks (ties count half); per negative case, the share of positives that outrank it."""
    m, n = int(positive.sum()), int((~positive).sum())
    everything = rankdata(scores)  # midranks: ties share their average rank
    among_positives = rankdata(scores[positive])
    among_negatives = rankdata(scores[~positive])
    v10 = (everything[positive] - among_positives) / n
    v01 = 1.0 - (everything[~positive] - among_negatives) / m
    return v10, v01


def delong_test(positive: Sequence[bool], score_a: Sequence[float],
                score_b: Sequence[float]) -> DeLong:
    """DeLong's test of AUC(score_b) - AUC(score_a) on the same cases (higher score = more
    likely positive). ValueError when the cases are not all of one length or hold only one
    kind; a covariance of zero (identical scores) gives z 0 and p 1."""
    positive = np.asarray(positive, bool)
    scores = [np.asarray(score_a, float), np.asarray(score_b, float)]
    if any(len(s) != len(positive) for s in scores):
        raise ValueError("DeLong's test needs both scores on the same cases")
    if positive.sum() < 2 or (~positive).sum() < 2:  # a variance needs two of each
        raise ValueError("DeLong's test needs at least two positive and two negative cases")
    parts = [_placements(positive, s) for s in scores]
    v10 = np.stack([p[0] for p in parts])
    v01 = np.stack([p[1] for p in parts])
    covariance = (np.cov(v10, ddof=1) / v10.shape[1] + np.cov(v01, ddof=1) / v01.shape[1])
    auc_a, auc_b = (float(v.mean()) for v in v10)
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    if variance <= 0:
        return DeLong(auc_a, auc_b, covariance, 0.0, 1.0)
    z = (auc_b - auc_a) / np.sqrt(variance)
    return DeLong(auc_a, auc_b, covariance, float(z), float(2 * norm.sf(abs(z))))


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment for testing several hypotheses at once: the k-th smallest p
    times (m - k + 1), never below the one before it, at most 1; nan stays nan and does not
    count among the m tests."""
    p = np.asarray(p_values, float)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    adjusted = np.full(len(p), np.nan)
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - k) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()
