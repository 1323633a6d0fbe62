"""A regression head's grades: its output cut at four points, fitted on validation for kappa.

A model trained with MSE on the grade outputs a number; rounding it (cuts at 0.5, 1.5, 2.5, 3.5)
is rarely the best reading, because MSE pulls rare high grades towards the common grade 0. The
Kaggle 2015 winners and the APTOS 2019 teams instead moved the cuts to maximise quadratic
weighted kappa on held-out images. Here: coordinate ascent, each cut in turn tried at every gap
between the validation outputs that lie between its neighbours (so the cuts stay ordered), until
no move raises kappa, from two starts (the rounding cuts, and cuts that give each grade its true
share), the better kept. Deterministic: the same outputs give the same
cuts, so `retino.predict` refits the run's cuts from its validation predictions file.
"""

from __future__ import annotations

import numpy as np

from retino.core.grades import NUM_GRADES
from retino.evaluation.metrics import quadratic_weighted_kappa

ROUNDING = np.arange(NUM_GRADES - 1) + 0.5  # 0.5 .. 3.5: the cuts where none were fitted
_MAX_CANDIDATES = 256  # gaps tried per cut and sweep (quantiles beyond that: 7,000 images)
_MAX_SWEEPS = 20


def grades_from_outputs(outputs: np.ndarray, cuts: np.ndarray = ROUNDING) -> np.ndarray:
    """(N,) grades 0..4: the number of cuts at or below each output."""
    return np.searchsorted(np.asarray(cuts, float), np.asarray(outputs, float), side="right")


def _candidates(outputs: np.ndarray, low: float, high: float) -> np.ndarray:
    """Midpoints between consecutive distinct outputs inside (low, high), at most
    _MAX_CANDIDATES of them (evenly spaced in rank)."""
    inside = np.unique(outputs[(outputs > low) & (outputs < high)])
    gaps = (inside[1:] + inside[:-1]) / 2
    if len(gaps) > _MAX_CANDIDATES:
        gaps = gaps[np.linspace(0, len(gaps) - 1, _MAX_CANDIDATES).round().astype(int)]
    return gaps


def _ascend(true: np.ndarray, outputs: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, float]:
    """(cuts, kappa) where coordinate ascent from `start` stops: no single cut's move raises
    kappa."""
    cuts = np.asarray(start, float).copy()
    best = quadratic_weighted_kappa(true, grades_from_outputs(outputs, cuts))
    for _ in range(_MAX_SWEEPS):
        moved = False
        for k in range(len(cuts)):
            low = cuts[k - 1] if k else -np.inf
            high = cuts[k + 1] if k + 1 < len(cuts) else np.inf
            for candidate in _candidates(outputs, low, high):
                trial = cuts.copy()
                trial[k] = candidate
                score = quadratic_weighted_kappa(true, grades_from_outputs(outputs, trial))
                if score > best + 1e-12:
                    best, cuts, moved = score, trial, True
        if not moved:
            break
    return cuts, best


def _matching_shares(true: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """Cuts that give each grade the share of images it truly has: a second start, from which
    the ascent reaches optima the rounding cuts' ascent stops short of."""
    shares = np.bincount(true, minlength=NUM_GRADES).cumsum()[:-1] / len(true)
    return np.maximum.accumulate(np.quantile(outputs, shares))


def fit_cut_points(true: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """The four increasing cuts that maximise kappa of the cut outputs against the true grades:
    the better of two coordinate ascents, from the rounding cuts and from cuts matching the
    grades' shares (one ascent stopped at a local optimum, kappa 0.825 against 0.834); the
    rounding cuts where no move improves on them (too few images, one grade only)."""
    true = np.asarray(true, int)
    outputs = np.asarray(outputs, float)
    if len(true) == 0:
        return ROUNDING.copy()
    rounded = _ascend(true, outputs, ROUNDING)
    matched = _ascend(true, outputs, _matching_shares(true, outputs))
    return matched[0] if matched[1] > rounded[1] + 1e-12 else rounded[0]


def cut_point_metrics(cuts: np.ndarray) -> dict[str, float]:
    """The cut points as metrics, cut_1 .. cut_4 (cut_k: where grade k begins)."""
    return {f"cut_{k}": float(cut) for k, cut in zip(range(1, NUM_GRADES), cuts, strict=True)}


def cut_points_from(metrics: dict[str, float], suffix: str = "") -> np.ndarray | None:
    """The cut points that cut_point_metrics keyed (with a suffix: `_selected`); None when the
    metrics hold none (a head with probabilities, or no validation split)."""
    keys = [f"cut_{k}{suffix}" for k in range(1, NUM_GRADES)]
    return np.array([metrics[key] for key in keys]) if all(k in metrics for k in keys) else None
