"""DeLong's test for two correlated ROC AUCs (the same cases scored twice), and Holm's
adjustment of a study's p-values: what a reviewer asks of "B's AUC is higher than A's".

DeLong, DeLong & Clarke-Pearson (1988), Biometrics 44:837, computed with midranks as in Sun & Xu
(2014), IEEE Signal Processing Letters 21:1389; checked against the pROC package's published
values on its aSAH data (tests/evaluation/test_delong.py). No well-kept Python library has it:
scikit-learn, SciPy and statsmodels compute AUCs but do not compare two.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm, rankdata


@dataclass(frozen=True)
class DeLong:
    """Two AUCs on the same cases, their DeLong covariance, and the test of their difference."""

    auc_a: float
    auc_b: float
    covariance: np.ndarray  # 2 x 2: var(AUC a), cov, var(AUC b)
    z: float  # (auc_b - auc_a) / its standard error
    p: float  # two-sided

    @property
    def difference(self) -> float:
        return self.auc_b - self.auc_a

    def difference_interval(self, level: float = 0.95) -> tuple[float, float]:
        """The normal interval of auc_b - auc_a."""
        half = norm.ppf((1 + level) / 2) * np.sqrt(self._difference_variance())
        return self.difference - half, self.difference + half

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


def _per_cluster(values: np.ndarray, cluster: np.ndarray, clusters: int) -> np.ndarray:
    """(K, I): the sum over each cluster's cases of (K, cases) values."""
    return np.stack([np.bincount(cluster, weights=row, minlength=clusters) for row in values])


def _cluster_terms(cluster: np.ndarray, kind: np.ndarray, parts: np.ndarray,
                   aucs: np.ndarray) -> tuple[np.ndarray, int]:
    """(K, I) deviations of each cluster's summed components from what its number of such
    cases predicts (Obuchowski's V(X_i) - m_i θ), and how many clusters hold such a case."""
    clusters = int(cluster.max()) + 1
    sizes = np.bincount(cluster[kind], minlength=clusters)
    summed = _per_cluster(parts, cluster[kind], clusters)
    return summed - sizes[None, :] * aucs[:, None], int(np.count_nonzero(sizes))


def auc_covariance(positive: Sequence[bool], scores: np.ndarray,
                   clusters: Sequence | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(AUCs (K,), covariance (K, K)) of K scores on the same cases. Cases of one cluster (a
    patient's two eyes) are not independent: Obuchowski's (1997, Biometrics 53:567) estimator
    sums each cluster's structural components before taking their variance, and adds the
    covariance of a cluster's positive and negative cases. With every case its own cluster it
    is DeLong's. ValueError with fewer than two positive or two negative clusters."""
    positive = np.asarray(positive, bool)
    scores = np.atleast_2d(np.asarray(scores, float))  # (K, N)
    if scores.shape[1] != len(positive):
        raise ValueError("DeLong's test needs every score on the same cases")
    cluster = pd.factorize(pd.Series(np.arange(len(positive)) if clusters is None
                                     else list(clusters)))[0]
    if len(np.unique(cluster[positive])) < 2 or len(np.unique(cluster[~positive])) < 2:
        raise ValueError("DeLong's test needs at least two positive and two negative cases "
                         "(patients)")
    parts = [_placements(positive, row) for row in scores]
    aucs = np.array([v10.mean() for v10, _ in parts])
    m, n, everyone = int(positive.sum()), int((~positive).sum()), int(cluster.max()) + 1
    a, with_positives = _cluster_terms(cluster, positive, np.stack([p[0] for p in parts]), aucs)
    b, with_negatives = _cluster_terms(cluster, ~positive, np.stack([p[1] for p in parts]), aucs)
    s10 = with_positives / (with_positives - 1) / m * (a @ a.T)
    s01 = with_negatives / (with_negatives - 1) / n * (b @ b.T)
    s11 = everyone / (everyone - 1) * (a @ b.T)
    return aucs, s10 / m + s01 / n + (s11 + s11.T) / (m * n)


def delong_test(positive: Sequence[bool], score_a: Sequence[float],
                score_b: Sequence[float], clusters: Sequence | None = None) -> DeLong:
    """DeLong's test of AUC(score_b) - AUC(score_a) on the same cases (higher score = more
    likely positive), with cases of one cluster (patient) counted together (auc_covariance).
    ValueError when the cases are not all of one length or hold only one kind; a covariance of
    zero (identical scores) gives z 0 and p 1."""
    if len(score_a) != len(positive) or len(score_b) != len(positive):
        raise ValueError("DeLong's test needs both scores on the same cases")
    aucs, covariance = auc_covariance(positive, np.stack([score_a, score_b]), clusters)
    return _contrast_test(aucs, covariance, np.array([-1.0, 1.0]))


def _contrast_test(aucs: np.ndarray, covariance: np.ndarray, weights: np.ndarray) -> DeLong:
    """The test of Σ weights × AUCs = 0, weights negative for A's runs (summing to -1) and
    positive for B's (to +1)."""
    side_a, side_b = weights < 0, weights > 0
    auc_a, auc_b = float(-weights[side_a] @ aucs[side_a]), float(weights[side_b] @ aucs[side_b])
    variance = float(weights @ covariance @ weights)
    # The 2 x 2 covariance of the two sides' means, so that difference_interval holds.
    means = np.stack([np.where(side_a, -weights, 0.0), np.where(side_b, weights, 0.0)])
    pooled = means @ covariance @ means.T
    if variance <= 1e-15:
        return DeLong(auc_a, auc_b, pooled, 0.0, 1.0)
    z = (auc_b - auc_a) / np.sqrt(variance)
    return DeLong(auc_a, auc_b, pooled, float(z), float(2 * norm.sf(abs(z))))


def mean_auc_test(positive: Sequence[bool], runs_a: Sequence[Sequence[float]],
                  runs_b: Sequence[Sequence[float]], clusters: Sequence | None = None) -> DeLong:
    """DeLong's test of the mean AUC of B's runs (seeds) minus the mean AUC of A's, on the same
    cases: the difference a study prints, whatever the number of seeds on each side (the AUC
    of seed-averaged scores would test two seed ensembles, and an ensemble of three beats one
    model of the same configuration). Clustered as auc_covariance."""
    aucs, covariance = auc_covariance(positive, np.stack([*runs_a, *runs_b]), clusters)
    weights = np.concatenate([np.full(len(runs_a), -1.0 / len(runs_a)),
                              np.full(len(runs_b), 1.0 / len(runs_b))])
    return _contrast_test(aucs, covariance, weights)


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
