"""A study's report, built from its runs in the MLflow store alone (the library behind
`python -m retino.report` and the report a sweep writes at its end).

Every number is computed again from the runs' predictions files (predictions_test.csv,
predictions_val.csv), so a report rebuilt from the store equals the one written at a sweep's end.
Writes results.md and results.csv (per configuration, the test set at the epoch chosen on
validation: accuracy, kappa, referable-DR AUC, sensitivity and specificity, per-grade recall,
with 95 % intervals; the lab's best test accuracy over epochs, labelled as chosen on test; the
majority-grade baseline; mean ± std over seeds; the model's cost: parameters, size, GFLOPs and
CPU latency per image), comparisons.csv (configurations that differ in one axis, paired, with
DeLong's test: retino/studies/comparison.py), screening.csv (per run, the
screening numbers at two operating points chosen on validation: retino/evaluation/screening.py),
comparison.png (per architecture, train and test accuracy per epoch), confusion_grid.png (every
run's normalised confusion matrix), roc_referable.png (every run's referable-DR ROC curve), and
report.html: all of it on one page, figures inline, which MLflow's artifact view shows.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np

from retino.core.errors import ConfigError
from retino.core.files import atomic_write_text, csv_text
from retino.core.grades import GRADE_COLUMN, GRADES, REFERABLE_GRADE
from retino.core.metric_names import (
    ALL_PHOTOGRAPHS,
    SELECTED_EPOCH,
    SELECTION_SCORE,
    TEST_ACC,
    TEST_MAJORITY_BASELINE,
    TEST_QWK,
    TEST_REFERABLE_AUC,
    TEST_REFERABLE_PATIENTS,
    TRAIN_ACC,
    recall_key,
    screening_key,
    selected,
)
from retino.core.names import (
    AUDIT_RUN_TAG,
    ERROR_TAG,
    FINISHED,
    PAGE_FILE,
    REPRODUCTION_FILE,
    RESULTS_FILE,
    ROC_FIGURE,
    SHARED_PATIENTS_TAG,
)
from retino.core.pages import html_page
from retino.evaluation.data_audit import audit_quote
from retino.evaluation.intervals import pooled_intervals, seed_interval
from retino.evaluation.metrics import referable_scores
from retino.evaluation.plots import (
    plot_accuracy_comparison,
    plot_confusion_grid,
    plot_referable_roc,
)
from retino.evaluation.predictions import headline_metrics, majority_baseline
from retino.studies.comparison import COLUMNS as COMPARISON_COLUMNS
from retino.studies.comparison import (
    Configuration,
    best_run,
    comparison_rows,
    configurations,
    one_axis_pairs,
    run_labels,
    run_names,
)
from retino.studies.folds import (
    CROSS_VALIDATION_COLUMNS,
    CROSS_VALIDATION_LEGEND,
    best_fold_ensemble,
    cross_validated,
    cross_validation_row,
    ensemble_screening,
    pool_folds,
    write_pool_files,
)
from retino.studies.reproduction_table import (
    REPRODUCTION_COLUMNS,
    REPRODUCTION_LEGEND,
    reproduction_table,
)
from retino.studies.screening_table import (
    SCREENING_COLUMNS,
    SCREENING_LEGEND,
    programme_prevalence,
    screening_rows,
)
from retino.tracking.audits import audit_metrics
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


def _only(header: list[str], rows: list[list[str]],
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


LEGEND = """\
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

COMPARISON_LEGEND = """\
Configurations that differ in one axis, on the same test images. Each Δ is B − A of the mean
over each configuration's seeds (a seed ensemble's AUC would beat one model of the same
configuration, so unequal seed counts would look like a finding), and its p tests that same Δ:
accuracy and kappa by a paired bootstrap over test patients (the same resampled patients score
both sides; p is twice the share of resamples across 0), the referable AUC by DeLong's test with
a patient's eyes counted together (Obuchowski 1997), whose normal interval the Δ shows. In
brackets, "Holm": every p of the table (pairs × three metrics) adjusted together by Holm's
method, so a finding is an adjusted p < 0.05; the intervals are each at 95 %, not adjusted.
With two or more seeds in common, the per-seed differences as mean ± std with their 95 % t
interval: a difference smaller than the run-to-run noise of training is not a finding.
"""


def to_markdown(header: list[str], rows: list[list[str]], failed: list[RunRecord]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    if failed:
        lines += ["", "Failed runs:", ""]
        lines += [f"- {run.name} ({run.run_id}): "
                  + " ".join(run.tags.get(ERROR_TAG, run.status).split()) for run in failed]
    return "\n".join(lines) + "\n"


def to_csv(header: list[str], rows: list[list[str]]) -> str:
    return csv_text([header, *rows])


def study_title(name: str, runs: list[RunRecord]) -> str:
    """The report's heading, the same at a sweep's end and when rebuilt from the store."""
    return f"{name}: {len(runs)} runs"


def best_line(finished: list[RunRecord], labels: dict[str, str]) -> str:
    """Which configuration a reader should take, chosen as registration chooses it: by a
    validation metric (mean over seeds; a cross-validated study: out of fold), never by the
    test set; why none is named otherwise."""
    ensemble = best_fold_ensemble(finished)
    if ensemble is not None:
        return (f"**Best configuration** by its out-of-fold {ensemble.metric}: "
                f"{ensemble.pool.label} ({ensemble.score:.4f}); registration registers its fold "
                f"ensemble ({len(ensemble.runs)} runs) as one model.\n")
    try:
        run, metric, score = best_run(finished)
    except ConfigError as err:
        return f"**No best configuration is named**: {err}\n"
    how = ("its validation metric (selection_score, mean over seeds)" if metric ==
           SELECTION_SCORE else "the validation kappa (the runs selected their epochs by "
           "different metrics; val_qwk_selected, mean over seeds)")
    return (f"**Best configuration** by {how}: {labels[run.run_id]} ({score:.4f}; best seed's "
            f"run {run.run_id}). Its test numbers are in the table above.\n")


def data_audit_lines(finished: list[RunRecord]) -> str:
    """What the audit of the study's data says (python -m retino.audit, linked from each run
    by its audit_run tag): the score a model reaches without the retina, beside the majority
    baseline, and the copies across splits; or that the data has none."""
    if not finished:
        return ""
    audits = sorted({run.tags.get(AUDIT_RUN_TAG, "") for run in finished})
    lines = ["", "## The data's audit", ""]
    if audits == [""]:
        return "\n".join([*lines, "The data has no audit: `python -m retino.audit` with the "
                           "study's data overrides shows what a model scores without looking "
                           "at the retina, and the copies across splits.", ""])
    for audit in audits:
        found = audit_metrics(audit) if audit else {}
        lines.append(f"- audit run {audit or '(none)'}: {audit_quote(found)}.")
    return "\n".join([*lines, ""])


def leakage_lines(finished: list[RunRecord]) -> str:
    """A warning for each run whose test patients also had an eye in training; '' for none."""
    leaked = [(run, int(run.tags[SHARED_PATIENTS_TAG])) for run in finished
              if int(run.tags.get(SHARED_PATIENTS_TAG, "0") or 0) > 0]
    if not leaked:
        return ""
    lines = ["", "**Test patients also in training** (a fellow eye in the training or "
             "validation split: fellow eyes usually share a grade, so these test numbers are "
             "optimistic):", ""]
    lines += [f"- {run.name} ({run.run_id}): {count} patient(s)" for run, count in leaked]
    return "\n".join(lines) + "\n"


def refused_lines(refused: list[tuple[str, str, str]]) -> str:
    """The one-axis pairs not compared, and why; '' for none."""
    if not refused:
        return ""
    lines = ["", "**Not compared** (a paired comparison needs the same labelled test images):",
             ""]
    lines += [f"- {a} and {b}: {why}" for a, b, why in refused]
    return "\n".join(lines) + "\n"


def write_report(runs: list[RunRecord], folder: Path, title: str) -> list[Path]:
    """The study's tables and figures as files in folder."""
    folder.mkdir(parents=True, exist_ok=True)
    header, rows = results_table(runs)
    failed = [run for run in runs if run.status != FINISHED]
    text = (f"# {title}\n\n" + to_markdown(*_only(header, rows, HEADLINE), failed) + "\n"
            + LEGEND)
    files = [atomic_write_text(folder / "results.csv", to_csv(header, rows))]
    finished = [run for run in runs if run.status == FINISHED]
    text += leakage_lines(finished)
    text += data_audit_lines(finished)
    labels = run_labels(finished)
    if len(labels) > 1:
        text += "\n" + best_line(finished, labels)
    configs = configurations(finished, labels)
    compared = comparison_rows(one_axis_pairs(configs))
    if compared.rows:
        text += "\n## Paired comparisons\n\n" + to_markdown(COMPARISON_COLUMNS, compared.rows,
                                                            [])
        text += "\n" + COMPARISON_LEGEND
        files.append(atomic_write_text(folder / "comparisons.csv",
                                       to_csv(COMPARISON_COLUMNS, compared.rows)))
    text += refused_lines(compared.refused)
    if pooled := cross_validated(configs):
        section, written = cross_validation_section(pooled, folder)
        text += section
        files += written
    if screened := screening_rows(finished, labels):
        text += ("\n## Screening: referable DR (grade ≥ 2), test set\n\n"
                 + to_markdown(SCREENING_COLUMNS, screened, []) + "\n" + SCREENING_LEGEND)
        files.append(atomic_write_text(folder / "screening.csv",
                                       to_csv(SCREENING_COLUMNS, screened)))
    if rows:
        text += ("\n## Each configuration in detail\n\n"
                 + to_markdown(*_only(header, rows, [c for c in header if c not in HEADLINE[2:]]),
                               []) + "\n" + DETAILS_LEGEND)
    if reproduced := reproduction_table(runs):
        text += ("\n## Original and reproduced runs\n\n"
                 + to_markdown(REPRODUCTION_COLUMNS, reproduced, []) + "\n" + REPRODUCTION_LEGEND)
        files.append(atomic_write_text(folder / REPRODUCTION_FILE,
                                       to_csv(REPRODUCTION_COLUMNS, reproduced)))
    files.insert(0, atomic_write_text(folder / RESULTS_FILE, text))
    if finished:
        files += _figures(finished, labels, folder, title)
    figures = [path for path in files if path.suffix == ".png"]
    files.append(atomic_write_text(folder / PAGE_FILE, html_page(title, text, figures)))
    return files


def cross_validation_section(configs: list[Configuration],
                             folder: Path) -> tuple[str, list[Path]]:
    """The cross-validated configurations' pooled folds: a table, each fold ensemble's
    screening report, and their predictions files."""
    rows, reports, files = [], [], []
    for config in configs:
        params = config.runs[0].params
        target = float(params.get("referable_sensitivity_target", 0.9))
        specificity = float(params.get("referable_specificity_target", 0.9))
        rounds = max(int(run.params.get("bootstrap_rounds", 0)) for run in config.runs)
        try:
            pool = pool_folds(config, target, rounds)
        except ValueError as err:  # fold models tested on different images
            log.warning("Folds of %s not pooled: %s.", config.label, err)
            continue
        rows.append(cross_validation_row(pool))
        reports.append(ensemble_screening(pool, target, specificity,
                                          programme_prevalence(params)))
        files += write_pool_files(pool, folder)
    if not rows:
        return "", []
    files.insert(0, atomic_write_text(folder / "cross_validation.csv",
                                      to_csv(CROSS_VALIDATION_COLUMNS, rows)))
    text = ("\n## Cross-validation\n\n" + to_markdown(CROSS_VALIDATION_COLUMNS, rows, [])
            + "\n" + CROSS_VALIDATION_LEGEND + "".join(f"\n{report}" for report in reports))
    return text, files


def _figures(finished: list[RunRecord], labels: dict[str, str], folder: Path,
             title: str) -> list[Path]:
    """Accuracy per epoch per architecture, every confusion matrix, every referable ROC curve."""
    panels: dict[str, list] = defaultdict(list)  # architecture -> curves of its runs
    for run in finished:
        # model=timm runs are told apart by their architecture, as their names are
        architecture = run.params.get("model.arch") or run.params.get("model.name", "runs")
        label = labels[run.run_id].removeprefix(architecture + "-")
        panels[architecture].append(
            (label, run.history.get(TRAIN_ACC, []), run.history.get(TEST_ACC, [])))
    files = [plot_accuracy_comparison(panels, folder / "comparison.png", title)]
    matrices = [(run.name, run.confusion) for run in finished if run.confusion is not None]
    if matrices:
        files.append(plot_confusion_grid(matrices, folder / "confusion_grid.png"))
    names = run_names(finished, labels)
    curves = {names[run.run_id]: (run.test[GRADE_COLUMN] >= REFERABLE_GRADE,
                                  referable_scores(run.test))
              for run in finished if run.test is not None}
    if curves:
        files.append(plot_referable_roc(curves, folder / ROC_FIGURE,
                                        f"{title}: referable DR, test set"))
    return files
