"""A study's report, built from its runs in the MLflow store alone.

    python -m retino.report --parent RUN_ID            # a sweep's parent run (its children)
    python -m retino.report --runs ID1 ID2 ... --out report/

Writes results.md and results.csv (per configuration, the test set at the epoch chosen on
validation: accuracy, kappa, referable-DR AUC, sensitivity and specificity, per-grade recall;
the lab's best test accuracy over epochs, labelled as chosen on test; the majority-grade
baseline; mean ± std where a configuration ran with several seeds), comparison.png (per
architecture, train and test accuracy per epoch, one colour per configuration) and
confusion_grid.png (every run's normalised confusion matrix).
"""

from __future__ import annotations

import argparse
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np

from retino.files import atomic_write_text, csv_text
from retino.plots import plot_accuracy_comparison, plot_confusion_grid
from retino.tracking import RunRecord, read_runs

log = logging.getLogger(__name__)

# The headline is the test set at the epoch chosen on validation; the lab's "best test accuracy
# over epochs" stays, labelled as what it is: an epoch chosen by looking at the test set.
COLUMNS = ["test acc % (selected epoch)", "test QWK (selected)", "referable AUC (selected)",
           "referable sensitivity % (selected, at operating point)",
           "referable specificity % (selected, at operating point)",
           "selected epoch"] + [f"recall grade {g} % (selected)" for g in range(5)] + [
           "best test acc % (epoch chosen on test, as the lab)", "majority-grade baseline %"]
_PERCENT, _PLAIN = 100, 1


def _row_values(run: RunRecord) -> list[float]:
    final = run.final
    # At the operating point chosen on validation; without a validation split, at the argmax
    # grade (the README says so).
    at = "_at_target" if "test_referable_sensitivity_at_target_selected" in final else ""
    cells = [(final.get("test_acc_selected"), _PERCENT), (final.get("test_qwk_selected"), _PLAIN),
             (final.get("test_referable_auc_selected"), _PLAIN),
             (final.get(f"test_referable_sensitivity{at}_selected"), _PERCENT),
             (final.get(f"test_referable_specificity{at}_selected"), _PERCENT),
             (final.get("selected_epoch"), _PLAIN)]
    cells += [(final.get(f"test_recall_grade{g}_selected"), _PERCENT) for g in range(5)]
    cells += [(max(run.history.get("test_acc") or [np.nan]), _PERCENT),
              (final.get("test_majority_baseline"), _PERCENT)]
    return [np.nan if value is None else scale * value for value, scale in cells]


# Columns with a 95 % bootstrap interval (resampled patients), and the metric behind each.
_INTERVALS = {COLUMNS[0]: ("test_acc", _PERCENT), COLUMNS[1]: ("test_qwk", _PLAIN),
              COLUMNS[2]: ("test_referable_auc", _PLAIN)}


def _interval(column: str, run: RunRecord) -> str:
    """' [low, high]' where the run logged an interval for this column, else ''."""
    if column not in _INTERVALS:
        return ""
    metric, scale = _INTERVALS[column]
    low = run.final.get(f"{metric}_selected_ci_low")
    high = run.final.get(f"{metric}_selected_ci_high")
    if low is None or high is None:
        return ""
    return f" [{_cell(column, scale * low)}, {_cell(column, scale * high)}]"


def _cell(column: str, value: float) -> str:
    return f"{value:.3f}" if "QWK" in column or "AUC" in column else \
        f"{value:.0f}" if column == "selected epoch" else f"{value:.2f}"


# Params that the run name already shows, or that differ between repeats of one configuration.
_IN_NAME = {"model.name", "pretrained", "pretrain.source", "freeze.name", "resolution.size"}
_REPEAT_KEYS = {"seed"}


def run_labels(runs: list[RunRecord]) -> dict[str, str]:
    """run_id -> a label of its configuration: the run name, plus every other param that varies
    across these runs (seed aside), e.g. 'resnet18-scratch-64px lr=0.01'."""
    keys = {k for run in runs for k in run.params} - _IN_NAME - _REPEAT_KEYS
    varying = sorted(k for k in keys if len({run.params.get(k) for run in runs}) > 1)
    return {run.run_id: " ".join([run.name, *(f"{k}={run.params.get(k)}" for k in varying)])
            for run in runs}


def results_table(runs: list[RunRecord]) -> tuple[list[str], list[list[str]]]:
    """Rows of the lab's table, one per configuration (runs that differ only in seed are one row,
    shown as mean ± std with n)."""
    finished = [run for run in runs if run.status == "FINISHED"]
    labels = run_labels(finished)
    groups: dict[str, list[RunRecord]] = defaultdict(list)
    for run in finished:
        groups[labels[run.run_id]].append(run)
    header = ["run", "n", *COLUMNS]
    rows = []
    for name, members in groups.items():
        values = np.array([_row_values(run) for run in members])  # (n, columns)
        if len(members) == 1:
            cells = [_cell(c, v) + _interval(c, members[0])
                     for c, v in zip(COLUMNS, values[0], strict=True)]
        else:
            cells = [f"{_cell(c, m)} ± {_cell(c, s)}" for c, m, s in zip(
                COLUMNS, values.mean(0), values.std(0, ddof=1), strict=True)]
        rows.append([name, str(len(members)), *cells])
    return header, rows


def to_markdown(header: list[str], rows: list[list[str]], failed: list[RunRecord]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    if failed:
        lines += ["", "Failed runs:", ""]
        lines += [f"- {run.name} ({run.run_id}): "
                  + " ".join(run.tags.get("error", run.status).split()) for run in failed]
    return "\n".join(lines) + "\n"


def to_csv(header: list[str], rows: list[list[str]]) -> str:
    return csv_text([header, *rows])


REPRODUCTION_COLUMNS = ["run", "original run", "reproduced run", "original final test acc %",
                        "reproduced final test acc %", "original final test QWK",
                        "reproduced final test QWK", "original final train loss",
                        "reproduced final train loss"]


def reproduction_table(runs: list[RunRecord]) -> list[list[str]]:
    """Rows of original vs reproduced final metrics, for runs that re-ran a logged run
    (python -m retino.reproduce); [] when none did."""
    copies = [run for run in runs if run.status == "FINISHED"
              and run.tags.get("reproduces", "/").isalnum()]  # a run id, not an output folder
    if not copies:
        return []
    originals = {run.run_id: run for run in read_runs(
        run_ids=sorted({run.tags["reproduces"] for run in copies}))}
    rows = []
    for copy in copies:
        original = originals[copy.tags["reproduces"]]
        values = [f"{100 * run.final.get('test_acc', np.nan):.2f}" for run in (original, copy)]
        values += [f"{run.final.get('test_qwk', np.nan):.3f}" for run in (original, copy)]
        values += [f"{run.final.get('train_loss', np.nan):.4f}" for run in (original, copy)]
        rows.append([copy.name, original.run_id, copy.run_id, *values])
    return rows


def write_report(runs: list[RunRecord], folder: Path, title: str) -> list[Path]:
    """The study's table and figures as files in folder."""
    folder.mkdir(parents=True, exist_ok=True)
    header, rows = results_table(runs)
    failed = [run for run in runs if run.status != "FINISHED"]
    text = f"# {title}\n\n" + to_markdown(header, rows, failed)
    files = [atomic_write_text(folder / "results.csv", to_csv(header, rows))]
    if reproduced := reproduction_table(runs):
        text += "\n## Original and reproduced runs\n\n" + to_markdown(REPRODUCTION_COLUMNS,
                                                                      reproduced, [])
        files.append(atomic_write_text(folder / "reproduction.csv",
                                       to_csv(REPRODUCTION_COLUMNS, reproduced)))
    files.insert(0, atomic_write_text(folder / "results.md", text))
    finished = [run for run in runs if run.status == "FINISHED"]
    if finished:
        panels: dict[str, list] = defaultdict(list)  # architecture -> curves of its runs
        labels = run_labels(finished)
        for run in finished:
            label = labels[run.run_id].removeprefix(run.params.get("model.name", "") + "-")
            panels[run.params.get("model.name", "runs")].append(
                (label, run.history.get("train_acc", []), run.history.get("test_acc", [])))
        files.append(plot_accuracy_comparison(panels, folder / "comparison.png", title))
        matrices = [(run.name, run.confusion) for run in finished if run.confusion is not None]
        if matrices:
            files.append(plot_confusion_grid(matrices, folder / "confusion_grid.png"))
    return files


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="python -m retino.report",
                                     description="Rebuild a study's report from MLflow.")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--parent", help="a sweep's parent run id: report on its children")
    group.add_argument("--runs", nargs="+", help="run ids to report on")
    parser.add_argument("--out", type=Path, default=Path("report"), help="folder (./report)")
    args = parser.parse_args(argv)
    runs = read_runs(run_ids=args.runs, parent_id=args.parent)
    if not runs:
        log.error("No runs found (MLflow store: MLFLOW_TRACKING_URI or ./mlflow.db).")
        return 2
    files = write_report(runs, args.out, f"Study {args.parent or 'selection'}")
    log.info("Wrote %s", ", ".join(str(f) for f in files))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
