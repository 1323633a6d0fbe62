"""The study's results table: one row per configuration, the test set at the epoch chosen on
validation (accuracy, kappa, referable-DR AUC, sensitivity and specificity, per-grade recall,
with 95 % intervals; the lab's best test accuracy over epochs, labelled as chosen on test; the
majority-grade baseline; mean ± std over seeds; the model's cost: parameters, size, GFLOPs and
CPU latency per image), every number computed again from the runs' predictions files.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np

from retino.core.grades import GRADES
from retino.core.metric_names import (
    ALL_PHOTOGRAPHS,
    SELECTED_EPOCH,
    TEST_ACC,
    TEST_MAJORITY_BASELINE,
    TEST_QWK,
    TEST_REFERABLE_AUC,
    TEST_REFERABLE_PATIENTS,
    recall_key,
    screening_key,
    selected,
)
from retino.core.names import FINISHED
from retino.evaluation.intervals import pooled_intervals, seed_interval
from retino.evaluation.predictions import headline_metrics, majority_baseline
from retino.studies.comparison import run_labels
from retino.tracking.records import RunRecord

log = logging.getLogger(__name__)

# The headline is the test set at the epoch chosen on validation; the lab's "best test accuracy
# over epochs" stays, labelled as what it is: an epoch chosen by looking at the test set.
COLUMNS = ["test acc % (selected epoch)", "test QWK (selected)",
           f"referable AUC (selected, {ALL_PHOTOGRAPHS})",
           f"referable sensitivity % (selected, at operating point, {ALL_PHOTOGRAPHS})",
           f"referable specificity % (selected, at operating point, {ALL_PHOTOGRAPHS})",
           "selected epoch"] + [f"recall grade {g} % (selected)" for g in GRADES] + [
           "best test acc % (epoch chosen on test, as the lab)", "majority-grade baseline %"]
_PERCENT, _PLAIN = 100, 1
# What the model costs on a device (retino/models/cost.py), beside what it scores: the metric
# and the cell's format. Blank for runs logged before runs measured it (or measure_cost=false).
COST = {"parameters (M)": ("cost_params", 1e-6, "{:.2f}"),
        "weights MB": ("cost_weights_mb", 1, "{:.1f}"),
        "GFLOPs per image": ("cost_gflops_per_image", 1, "{:.3f}"),
        "CPU ms per image (batch 1)": ("cost_cpu_ms_per_image_b1", 1, "{:.1f}"),
        "CPU ms per image (batch 32)": ("cost_cpu_ms_per_image_b32", 1, "{:.1f}")}


def run_metrics(run: RunRecord) -> dict[str, float]:
    """The run's metrics at its selected epoch, computed again from its predictions files with
    its own operating-point target and bootstrap rounds (the logged values for runs from before
    predictions files existed)."""
    if run.test is None:
        return run.final
    target = float(run.params.get("referable_sensitivity_target", 0.9))
    rounds = int(run.params.get("bootstrap_rounds", 0))
    return {**run.final, **headline_metrics(run.test, run.val, target, rounds),
            TEST_MAJORITY_BASELINE: majority_baseline(run.test)}


def cost_cells(finals: list[dict[str, float]]) -> list[str]:
    """The configuration's cost: the median over its seeds' runs (the same network; their
    latencies differ only by the machine's noise), blank where none measured it."""
    cells = []
    for metric, scale, form in COST.values():
        values = [final[metric] for final in finals if metric in final]
        cells.append(form.format(scale * float(np.median(values))) if values else "")
    return cells


def _row_values(run: RunRecord, final: dict[str, float]) -> list[float]:
    # At the operating point chosen on validation; without a validation split, at the argmax
    # grade (the cell says so: _mark_argmax).
    point = "at_target" if screening_key("sensitivity", point="at_target") in final else ""
    cells = [(final.get(selected(TEST_ACC)), _PERCENT), (final.get(selected(TEST_QWK)), _PLAIN),
             (final.get(selected(TEST_REFERABLE_AUC)), _PLAIN),
             (final.get(screening_key("sensitivity", point=point)), _PERCENT),
             (final.get(screening_key("specificity", point=point)), _PERCENT),
             (final.get(SELECTED_EPOCH), _PLAIN)]
    cells += [(final.get(selected(recall_key(g))), _PERCENT) for g in GRADES]
    cells += [(max(run.history.get(TEST_ACC) or [np.nan]), _PERCENT),
              (final.get(TEST_MAJORITY_BASELINE), _PERCENT)]
    return [np.nan if value is None else scale * value for value, scale in cells]


# Columns with a 95 % interval (a patient's eyes counted together), and the metric behind each.
_INTERVALS = {COLUMNS[0]: (TEST_ACC, _PERCENT), COLUMNS[1]: (TEST_QWK, _PLAIN),
              COLUMNS[2]: (TEST_REFERABLE_AUC, _PLAIN)}
_RANGES = {COLUMNS[0]: (0, 100), COLUMNS[1]: (-1, 1), COLUMNS[2]: (0, 1)}


def _interval(column: str, final: dict[str, float]) -> str:
    """' [low, high]' where the run has an interval for this column, else ''."""
    if column not in _INTERVALS:
        return ""
    metric, scale = _INTERVALS[column]
    low = final.get(f"{metric}_selected_ci_low")
    high = final.get(f"{metric}_selected_ci_high")
    if low is None or high is None:
        return ""
    positives = final.get(TEST_REFERABLE_PATIENTS, np.inf)
    if np.isnan(low) and metric.endswith("auc") and np.isfinite(positives):
        # too few referable patients (runs logged before 2026-12 gave none below 10)
        return f" [no interval: {positives:.0f} referable patients]"
    undefined = final.get(f"{metric}_selected_ci_undefined_rounds", 0)
    note = f"; {undefined:.0f} resamples undefined" if undefined else ""
    return f" [{_cell(column, scale * low)}, {_cell(column, scale * high)}{note}]"


def _cell(column: str, value: float) -> str:
    return f"{value:.3f}" if "QWK" in column or "AUC" in column else \
        f"{value:.0f}" if column == "selected epoch" else f"{value:.2f}"


def _over_seeds(column: str, values: np.ndarray,
                pooled: dict[str, tuple[float, float]] | None) -> str:
    """'mean ± std [low, high]': the seeds' spread as ± std, and where the column has intervals,
    the interval of the mean over test patients and seeds (pooled_intervals); without
    predictions files (runs logged before them), the t interval over seeds, kept inside the
    values the metric can take."""
    mean, std, low, high = seed_interval(values)
    if column not in _INTERVALS:
        return f"{_cell(column, mean)} ± {_cell(column, std)}"
    metric, scale = _INTERVALS[column]
    if pooled is not None:
        low, high = (scale * bound for bound in pooled[metric.removeprefix("test_")])
    else:  # a t interval is symmetric; the metric is not
        lowest, highest = _RANGES[column]
        low, high = max(low, lowest), min(high, highest)
    interval = "" if np.isnan(low) else f" [{_cell(column, low)}, {_cell(column, high)}]"
    return f"{_cell(column, mean)} ± {_cell(column, std)}{interval}"


def _pooled(members: list[RunRecord]) -> dict[str, tuple[float, float]] | None:
    """The seeds' pooled intervals, or None when they cannot be computed (runs without
    predictions files or bootstrap rounds, or seeds tested on different images)."""
    rounds = max(int(run.params.get("bootstrap_rounds", 0)) for run in members)
    if rounds == 0 or any(run.test is None for run in members):
        return None
    try:
        return pooled_intervals([run.test for run in members], rounds)
    except ValueError as err:
        log.warning("No pooled interval for %s: %s.", members[0].name, err)
        return None


def results_table(runs: list[RunRecord]) -> tuple[list[str], list[list[str]]]:
    """Rows of the lab's table, one per configuration: a single run with its intervals;
    runs that differ only in seed as mean ± std with the interval over seeds."""
    finished = [run for run in runs if run.status == FINISHED]
    labels = run_labels(finished)
    groups: dict[str, list[RunRecord]] = defaultdict(list)
    for run in finished:
        groups[labels[run.run_id]].append(run)
    header = ["run", "seeds", *COLUMNS, *COST]  # seeds: runs of the configuration, not images
    rows = []
    for name, members in groups.items():
        finals = [run_metrics(run) for run in members]
        values = np.array([_row_values(run, final)
                           for run, final in zip(members, finals, strict=True)])
        if len(members) == 1:
            cells = [_cell(c, v) + _interval(c, finals[0])
                     for c, v in zip(COLUMNS, values[0], strict=True)]
        else:
            pooled = _pooled(members)
            cells = [_over_seeds(c, values[:, i], pooled) for i, c in enumerate(COLUMNS)]
        rows.append([name, str(len(members)), *_mark_argmax(cells, finals), *cost_cells(finals)])
    return header, rows


_AT_OPERATING_POINT = (COLUMNS[3], COLUMNS[4])  # sensitivity and specificity
# The report's first table, which fits a screen; the others follow in a section of their own
# (results.csv holds every column).
HEADLINE = ["run", "seeds", *COLUMNS[:3], COLUMNS[5]]  # accuracy, kappa, AUC; the epoch


def only_columns(header: list[str], rows: list[list[str]],
                 columns: list[str]) -> tuple[list[str], list[list[str]]]:
    """The table reduced to these columns, in their order."""
    keep = [header.index(column) for column in columns]
    return [header[k] for k in keep], [[row[k] for k in keep] for row in rows]


def _mark_argmax(cells: list[str], finals: list[dict[str, float]]) -> list[str]:
    """The header says "at operating point"; a run without a validation split has none (the
    test set must not choose one), and its cells are at the predicted grade: they say so."""
    if all(screening_key("sensitivity", point="at_target") in final for final in finals):
        return cells
    return [f"{cell} (at predicted grade)" if column in _AT_OPERATING_POINT else cell
            for column, cell in zip(COLUMNS, cells, strict=True)]


RESULTS_LEGEND = """\
The test set is scored at the epoch chosen on the validation split (`selection_metric`). A
single run shows 95 % intervals as `value [low, high]`, a patient's eyes counted together:
accuracy's and the AUC's are score intervals (Wilson's with the design effect; the AUC's from
DeLong's variance clustered by patient), which never collapse at 100 %; kappa's a bootstrap over
test patients, its resamples where kappa is undefined (one grade everywhere) left out and counted
in the cell. A configuration run with several seeds (`seeds` > 1) shows `mean ± std [low, high]`:
the std of its seeds (the noise of training) and a 95 % interval of the mean that adds the seeds'
spread to the test set's sampling error (more seeds never make it narrower than the test set
allows). An AUC with fewer than 2 referable patients has no interval, and the cell says so.
Accuracy means little beside the majority-grade baseline (in the detailed table below):
predicting grade 0 for every image scores it.
"""

DETAILS_LEGEND = """\
The sensitivity and specificity columns count all photographs (see the screening section for the
gradable ones, and those not gradable counted as "refer"). The lab's column chose its epoch by
looking at the test set, and is optimistic. The last columns are what the model costs on a
device (median over seeds): parameters, the saved weights, FLOPs per image (convolutions and
matrix products, a multiply-add counted as 2) and CPU milliseconds per image at batch 1 and 32,
timed at the end of each run on the machine in its `cost_machine` tag; blank for runs that did not
measure them.
"""
