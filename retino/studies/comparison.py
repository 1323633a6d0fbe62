"""Paired comparisons of a study's configurations: for every two that differ in exactly one axis
(pretrained or scratch; ResNet18 or ResNet50; 224 or 512 px; ...), the difference in test
accuracy, kappa and referable-DR AUC on the same test images with a paired bootstrap interval,
and, with several seeds, the per-seed differences as mean ± std with their interval over seeds.
The table a reviewer reads to decide whether an ablation matters. Also: how runs are labelled by
configuration, and which configuration is best without looking at the test set."""

from __future__ import annotations

import logging
import re
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from retino.core.errors import ConfigError
from retino.core.grades import GRADE_COLUMN, PATIENT_COLUMN, REFERABLE_GRADE
from retino.core.keys import IN_NAME, NOT_AN_AXIS
from retino.core.metric_names import ALL_PHOTOGRAPHS, SELECTION_SCORE, VAL_QWK, selected
from retino.core.names import FINISHED
from retino.evaluation.delong import DeLong, holm_adjusted, mean_auc_test
from retino.evaluation.intervals import paired_differences, same_images, seed_interval
from retino.evaluation.metrics import referable_scores
from retino.tracking.records import RunRecord

log = logging.getLogger(__name__)

@dataclass
class Configuration:
    """The runs of one configuration in a study: one per seed (and per fold, cross-validated)."""

    label: str
    params: dict[str, str]  # what it learned from (the first run's, without NOT_AN_AXIS)
    runs: list[RunRecord]

    def repeats(self) -> dict[str, RunRecord]:
        """Its runs by seed and fold: fold k of one configuration pairs with fold k of
        another (the same training images), as seed s pairs with seed s."""
        return {f"{run.params.get('seed', '')}/{run.params.get('data.fold', '')}": run
                for run in self.runs}


def configurations(runs: list[RunRecord], labels: Mapping[str, str]) -> list[Configuration]:
    """The finished runs with predictions, grouped by their configuration label."""
    groups: dict[str, Configuration] = {}
    for run in runs:
        if run.status != FINISHED or run.test is None:
            continue
        params = {k: v for k, v in run.params.items() if k not in NOT_AN_AXIS}
        groups.setdefault(labels[run.run_id], Configuration(labels[run.run_id], params, []))
        groups[labels[run.run_id]].runs.append(run)
    return list(groups.values())


def axis_of(key: str) -> str:
    """The axis a param belongs to: its config group ('model.name' -> 'model'), or itself."""
    return key.split(".")[0]


OFF = {"none", "null", "off", "false", "0"}  # an option that turns something off: A, the baseline


def _sort_key(value: str | None) -> tuple[int, float, tuple]:
    """Off first (tta=none before flips, ema_decay=None before 0.999), then numbers by value
    (64 before 224), then text with its numbers read as numbers (False before True, resnet18
    before resnet50 before resnet101)."""
    if value is None or str(value).lower() in OFF:
        return -1, 0.0, ()
    try:
        return 0, float(value), ()
    except (TypeError, ValueError):
        parts = re.split(r"(\d+)", str(value))
        return 1, 0.0, tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def one_axis_pairs(configs: list[Configuration]) -> list[tuple[str, Configuration, Configuration]]:
    """(what changes, A, B) for every two configurations that differ in exactly one axis, A the
    lower value of that axis (scratch before pretrained, 64 before 224 px)."""
    pairs = []
    for first, second in combinations(configs, 2):
        keys = sorted(k for k in first.params.keys() | second.params.keys()
                      if first.params.get(k) != second.params.get(k))
        if len({axis_of(key) for key in keys}) != 1:
            continue
        a, b = sorted((first, second), key=lambda c: [_sort_key(c.params.get(k)) for k in keys])
        change = ", ".join(f"{k}: {a.params.get(k)} → {b.params.get(k)}" for k in keys)
        pairs.append((change, a, b))
    return pairs


_NAMES = {"acc": ("Δ test acc %", 100), "qwk": ("Δ test QWK", 1),
          "referable_auc": (f"Δ referable AUC, {ALL_PHOTOGRAPHS}", 1)}
_BOOTSTRAPPED = ("acc", "qwk")  # the referable AUC's difference is DeLong's
DIFFERENCE = {"acc": "Δ test acc % (B − A) [paired patient bootstrap 95 %]",
              "qwk": "Δ test QWK (B − A) [paired patient bootstrap 95 %]",
              "referable_auc": f"Δ referable AUC, {ALL_PHOTOGRAPHS} (B − A) [DeLong 95 %, patients "
                                "clustered]"}
P_VALUE = {"acc": "p of Δ test acc (paired patient bootstrap; Holm)",
           "qwk": "p of Δ test QWK (paired patient bootstrap; Holm)",
           "referable_auc": f"p of Δ referable AUC, {ALL_PHOTOGRAPHS} (DeLong, patients clustered; "
                             "Holm)"}
AUCS = f"referable AUC, {ALL_PHOTOGRAPHS}, A → B"
COLUMNS = ["change", "A", "B", "seeds (A / B)", DIFFERENCE["acc"], P_VALUE["acc"],
           DIFFERENCE["qwk"], P_VALUE["qwk"], AUCS, DIFFERENCE["referable_auc"],
           P_VALUE["referable_auc"],
           *(f"{name} per seed (mean ± std over seeds)" for name, _ in _NAMES.values())]


def _signed(value: float, scale: float) -> str:
    """Percent points with 2 decimals, kappa and AUC with 3; '+' shown for a difference."""
    return f"{scale * value:+.{2 if scale != 1 else 3}f}"


def _with_interval(value: float, low: float, high: float, scale: float) -> str:
    if np.isnan(low):
        return _signed(value, scale)
    return f"{_signed(value, scale)} [{_signed(low, scale)}, {_signed(high, scale)}]"


def _per_seed_cells(a: Configuration, b: Configuration) -> list[str]:
    """Mean ± std [t interval] of the differences between runs of the same seed; '' with fewer
    than two seeds in common."""
    seeds_a, seeds_b = a.repeats(), b.repeats()
    common = sorted(seeds_a.keys() & seeds_b.keys())
    if len(common) < 2:
        return [""] * len(_NAMES)
    differences = [paired_differences([seeds_a[s].test], [seeds_b[s].test], rounds=0)
                   for s in common]
    cells = []
    for metric, (_, scale) in _NAMES.items():
        mean, std, low, high = seed_interval([d[metric][0] for d in differences])
        cells.append(f"{_signed(mean, scale)} ± {_signed(std, scale)[1:]} "
                     f"[{_signed(low, scale)}, {_signed(high, scale)}]")
    return cells


def auc_difference(a: Configuration, b: Configuration) -> DeLong | None:
    """DeLong's test of B's mean referable AUC over its seeds minus A's, on the same test
    images, a patient's eyes counted together (mean_auc_test); each run scored by its referable
    score (P(referable), a regression head's output: AUC depends on the ranking alone, so the
    two compare). None when the images hold too few of one kind."""
    aligned = same_images([run.test for run in a.runs + b.runs])
    scores = [referable_scores(frame) for frame in aligned]
    try:
        return mean_auc_test(aligned[0][GRADE_COLUMN] >= REFERABLE_GRADE, scores[: len(a.runs)],
                             scores[len(a.runs):], aligned[0][PATIENT_COLUMN])
    except ValueError:
        return None


def _p_cell(p: float, adjusted: float) -> str:
    return "" if np.isnan(p) else f"{p:.3g} (Holm {adjusted:.3g})"


def _auc_cells(test: DeLong | None) -> tuple[list[str], float]:
    """The AUCs, their difference with DeLong's interval, and its p (nan without a test)."""
    if test is None:
        return ["", ""], np.nan
    return [f"{test.auc_a:.3f} → {test.auc_b:.3f}",
            _with_interval(test.difference, *test.difference_interval(), 1)], test.p


@dataclass
class Comparisons:
    """The one-axis pairs' table rows, and the pairs refused with the reason."""

    rows: list[list[str]]
    refused: list[tuple[str, str, str]]  # A, B, why


def _pair_row(change: str, a: Configuration, b: Configuration
              ) -> tuple[list[str], dict[str, float]]:
    """A pair's row with its p columns left blank, and its p-values by metric. ValueError when
    the two were tested on different images."""
    rounds = max(int(run.params.get("bootstrap_rounds", 0)) for run in a.runs + b.runs)
    differences = paired_differences([run.test for run in a.runs],
                                     [run.test for run in b.runs], rounds)
    auc_cells, auc_p = _auc_cells(auc_difference(a, b))
    cells = {column: "" for column in COLUMNS}
    cells |= {"change": change, "A": a.label, "B": b.label,
              "seeds (A / B)": f"{len(a.runs)} / {len(b.runs)}", AUCS: auc_cells[0],
              DIFFERENCE["referable_auc"]: auc_cells[1]}
    for metric in _BOOTSTRAPPED:
        cells[DIFFERENCE[metric]] = _with_interval(*differences[metric][:3], _NAMES[metric][1])
    per_seed = [column for column in COLUMNS if column.endswith("per seed (mean ± std over seeds)")]
    cells |= dict(zip(per_seed, _per_seed_cells(a, b), strict=True))
    p_values = {metric: differences[metric][3] for metric in _BOOTSTRAPPED}
    return [cells[column] for column in COLUMNS], p_values | {"referable_auc": auc_p}


def comparison_rows(pairs: list[tuple[str, Configuration, Configuration]]) -> Comparisons:
    """One row per pair tested on the same images: each difference with its interval and the p
    of that same difference, every p Holm-adjusted over all the tests of the table (pairs ×
    metrics); pairs on different test sets are refused: their difference would mix the models
    with the data."""
    rows, p_values, refused = [], [], []
    for change, a, b in pairs:
        try:
            row, p = _pair_row(change, a, b)
        except ValueError as err:
            log.warning("Not compared: %s and %s (%s).", a.label, b.label, err)
            refused.append((a.label, b.label, str(err)))
            continue
        rows.append(row)
        p_values.append(p)
    family = [p[metric] for p in p_values for metric in _NAMES]
    adjusted = iter(holm_adjusted(family))
    for row, p in zip(rows, p_values, strict=True):
        for metric in _NAMES:
            row[COLUMNS.index(P_VALUE[metric])] = _p_cell(p[metric], next(adjusted))
    return Comparisons(rows, refused)


def run_labels(runs: list[RunRecord]) -> dict[str, str]:
    """run_id -> a label of its configuration: the run name, plus every other param that varies
    across these runs (seed, and how they ran, aside), e.g. 'resnet18-scratch-64px lr=0.01'."""
    keys = {k for run in runs for k in run.params} - IN_NAME - NOT_AN_AXIS
    varying = sorted(k for k in keys if len({run.params.get(k) for run in runs}) > 1)
    # A group whose option varies is shown by its option's name alone (augmentation=strong),
    # not by every key the option sets.
    chosen = {k.removesuffix(".name") for k in varying if k.endswith(".name")}
    shown = [k for k in varying if k.endswith(".name") or k.split(".")[0] not in chosen]

    def part(run: RunRecord, key: str) -> str:
        return f"{key.removesuffix('.name')}={_short(run.params.get(key))}"
    return {run.run_id: " ".join([run.name, *(part(run, k) for k in shown)]) for run in runs}


def run_names(runs: list[RunRecord], labels: dict[str, str]) -> dict[str, str]:
    """run_id -> its configuration's label, and its seed where the configuration has several."""
    repeats = Counter(labels[run.run_id] for run in runs)
    return {run.run_id: labels[run.run_id] + (f" seed {run.params.get('seed')}"
                                              if repeats[labels[run.run_id]] > 1 else "")
            for run in runs}


def _short(value: str | None) -> str | None:
    """A logged number as people read it: 0.008459126528049376 -> 0.008459."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return f"{number:.4g}" if "." in value or "e" in value.lower() else value


COMMON_VALIDATION_METRIC = selected(VAL_QWK)  # every run with a validation split logs it


def selection_rule(runs: list[RunRecord]) -> tuple[str, bool]:
    """(metric, higher is better) that chooses among these runs, never a test metric: the
    validation metric they all selected their epoch with, or, when they selected with different
    ones, the validation kappa every run has. ConfigError when a run has no validation split:
    then only the test set could choose, and it must not."""
    without = [run for run in runs if run.val is None]
    if without:
        names = ", ".join(sorted({run.name for run in without}))
        raise ConfigError(f"{len(without)} of {len(runs)} runs have no validation split "
                          f"(data.val_fraction=0: {names}), so only the test set could choose "
                          "among them, and it must not. Re-run them with data.val_fraction > 0 "
                          "(e.g. 0.1) to choose or register a best configuration.")
    metrics = {run.params.get("selection_metric", VAL_QWK) for run in runs}
    if len(metrics) == 1:
        metric = metrics.pop()
        return SELECTION_SCORE, not metric.endswith("loss")
    return COMMON_VALIDATION_METRIC, True


def best_run(runs: list[RunRecord]) -> tuple[RunRecord, str, float]:
    """(run, the metric that chose it, the configuration's mean score) among finished runs;
    ConfigError when no validation metric can choose (see selection_rule)."""
    finished = [run for run in runs if run.status == FINISHED]
    if not finished:
        raise ConfigError("No finished run to register: the study has none.")
    metric, higher = selection_rule(finished)
    sign = 1.0 if higher else -1.0
    labels = run_labels(finished)
    groups: dict[str, list[RunRecord]] = defaultdict(list)
    for run in finished:
        groups[labels[run.run_id]].append(run)

    def mean_score(members: list[RunRecord]) -> float:
        return float(np.mean([sign * run.final.get(metric, np.nan) for run in members]))

    label = max(groups, key=lambda name: np.nan_to_num(mean_score(groups[name]), nan=-np.inf))
    # A seed without a score is never the best one, whichever way the metric points.
    chosen = max(groups[label], key=lambda run: np.nan_to_num(
        sign * run.final.get(metric, np.nan), nan=-np.inf))
    return chosen, metric, sign * mean_score(groups[label])
