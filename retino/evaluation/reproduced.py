"""Whether a run reproduced: its headline numbers (test accuracy, kappa, referable AUC) and the
reproduction's, on the same test photographs, with the difference's paired patient bootstrap
interval and a verdict.

- "identical": the two runs' predictions files are equal, image by image, to the last digit
  (what deterministic=true on a CPU promises, with the same code and data);
- "reproduced": the reproduction's number lies within the original's 95 % interval, and the
  interval of their difference covers 0;
- "differs": either fails. Where identical predictions were expected (deterministic=true on a
  CPU, both runs), any other verdict says so;
- "not compared": the metric is undefined on these photographs (an AUC without a referable
  image); a run's overall verdict leaves it aside.

"reproduced" asks that the two models answer these photographs alike, within what the test
set can tell apart; two trainings that differ only by chance may still "differ" on a large test
set, and the difference's interval then says by how much.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from retino.core.grades import IMAGE_COLUMN
from retino.core.metric_names import ALL_PHOTOGRAPHS
from retino.evaluation.intervals import INTERVAL_METRICS, paired_differences, run_intervals
from retino.evaluation.predictions import frame_metrics

IDENTICAL, REPRODUCED, DIFFERS = "identical", "reproduced", "differs"
NOT_COMPARED = "not compared"
# metric -> its name in the table, the scale it is shown on and its digits
SHOWN = {"acc": ("test accuracy %", 100, 2), "qwk": ("test QWK", 1, 3),
         "referable_auc": (f"referable AUC, {ALL_PHOTOGRAPHS}", 1, 3)}
EXPECTED_IDENTICAL = "deterministic=true on a CPU: identical predictions expected"


@dataclass(frozen=True)
class Verdict:
    """One headline metric of one run and of its reproduction."""

    metric: str  # a key of SHOWN
    original: float
    original_interval: tuple[float, float]
    reproduced: float
    difference: tuple[float, float, float]  # reproduced − original, its 95 % interval
    verdict: str
    note: str = ""  # what was expected, where that matters

    def cells(self) -> list[str]:
        """The metric's name, the original [interval], the reproduction, Δ [interval],
        the verdict (with its note)."""
        name, scale, digits = SHOWN[self.metric]

        def shown(value: float) -> str:
            return f"{scale * value:.{digits}f}"
        low, high = self.original_interval
        delta, d_low, d_high = self.difference
        return [name, f"{shown(self.original)} [{shown(low)}, {shown(high)}]",
                shown(self.reproduced),
                f"{scale * delta:+.{digits}f} [{scale * d_low:+.{digits}f}, "
                f"{scale * d_high:+.{digits}f}]",
                self.verdict + (f" ({self.note})" if self.note else "")]


def identical_predictions(original: pd.DataFrame, reproduced: pd.DataFrame) -> bool:
    """The same photographs, each with the same answers to the last digit."""
    if sorted(original.columns) != sorted(reproduced.columns) or len(original) != len(reproduced):
        return False
    a = original.sort_values(IMAGE_COLUMN).reset_index(drop=True)
    b = reproduced.sort_values(IMAGE_COLUMN).reset_index(drop=True)[a.columns]
    return bool(a.equals(b))


def _judge(inside: bool, covers_zero: bool, identical: bool, expect_identical: bool,
           defined: bool) -> tuple[str, str]:
    if identical:
        return IDENTICAL, ""
    if not defined:  # an AUC of a test set without a referable image, say
        return NOT_COMPARED, "undefined on these photographs"
    verdict = REPRODUCED if inside and covers_zero else DIFFERS
    return verdict, EXPECTED_IDENTICAL if expect_identical else ""


def reproduction_verdicts(original: pd.DataFrame, reproduced: pd.DataFrame, rounds: int,
                          expect_identical: bool = False, seed: int = 0) -> list[Verdict]:
    """A verdict per headline metric (INTERVAL_METRICS) of a run's test predictions and its
    reproduction's. ValueError when they were not tested on the same labelled photographs."""
    identical = identical_predictions(original, reproduced)
    differences = paired_differences([original], [reproduced], rounds, seed)
    intervals = run_intervals(original, "", rounds, seed)
    points = frame_metrics(original, ""), frame_metrics(reproduced, "")
    verdicts = []
    for metric in INTERVAL_METRICS:
        low, high = intervals[f"{metric}_ci_low"], intervals[f"{metric}_ci_high"]
        delta, d_low, d_high, _ = differences[metric]
        again = points[1][metric]
        inside = bool(low <= again <= high) if not np.isnan(low) else bool(delta == 0)
        defined = not (np.isnan(points[0][metric]) or np.isnan(again))
        verdict, note = _judge(inside, bool(d_low <= 0 <= d_high), identical, expect_identical,
                               defined)
        verdicts.append(Verdict(metric, points[0][metric], (low, high), again,
                                (delta, d_low, d_high), verdict, note))
    return verdicts


def overall_verdict(verdicts: list[str]) -> str:
    """A run's verdict from its metrics': identical or reproduced when every metric is, else
    differs (or not compared)."""
    found = set(verdicts) - {NOT_COMPARED} or {NOT_COMPARED}  # a metric undefined: aside
    if found == {IDENTICAL}:
        return IDENTICAL
    for worst in (DIFFERS, NOT_COMPARED):
        if worst in found:
            return worst
    return REPRODUCED
