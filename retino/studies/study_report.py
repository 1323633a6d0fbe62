"""A study's report, built from its runs in the MLflow store alone (the library behind
`python -m retino.report` and the report a sweep writes at its end).

Every number is computed again from the runs' predictions files (predictions_test.csv,
predictions_val.csv), so a report rebuilt from the store equals the one written at a sweep's end.
Writes results.md and results.csv (the results table: retino/studies/results_table.py),
comparisons.csv (configurations that differ in one axis, paired, with
DeLong's test: retino/studies/comparison.py), screening.csv (per run, the
screening numbers at two operating points chosen on validation: retino/evaluation/screening.py),
comparison.png (per architecture, train and test accuracy per epoch), confusion_grid.png (every
run's normalised confusion matrix), roc_referable.png (every run's referable-DR ROC curve), and
report.html: all of it on one page, figures inline, which MLflow's artifact view shows.

results.md is a list of sections (SECTIONS, below), each a function of the study's runs that
returns its Markdown and the files it wrote: a new section is one such function, added there.
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from retino.core.errors import ConfigError
from retino.core.files import atomic_write_text, csv_text
from retino.core.grades import GRADE_COLUMN, REFERABLE_GRADE
from retino.core.metric_names import SELECTION_SCORE, TEST_ACC, TRAIN_ACC
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
from retino.evaluation.metrics import referable_scores
from retino.evaluation.plots import (
    plot_accuracy_comparison,
    plot_confusion_grid,
    plot_referable_roc,
)
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
from retino.studies.results_table import (
    DETAILS_LEGEND,
    HEADLINE,
    RESULTS_LEGEND,
    only_columns,
    results_table,
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


@dataclass(frozen=True)
class Section:
    """A part of results.md, and the files it wrote beside it."""

    text: str = ""
    files: tuple[Path, ...] = ()


@dataclass(frozen=True)
class StudyRuns:
    """What every section reads: the study's runs, sorted once."""

    runs: list[RunRecord]
    folder: Path
    header: list[str]  # the results table (every column) and its rows, one per configuration
    rows: list[list[str]]

    @functools.cached_property
    def finished(self) -> list[RunRecord]:
        return [run for run in self.runs if run.status == FINISHED]

    @functools.cached_property
    def labels(self) -> dict[str, str]:
        return run_labels(self.finished)

    @functools.cached_property
    def configs(self) -> list[Configuration]:
        return configurations(self.finished, self.labels)


def results_section(study: StudyRuns) -> Section:
    """The headline table (fits a screen; results.csv holds every column) and its legend."""
    failed = [run for run in study.runs if run.status != FINISHED]
    text = to_markdown(*only_columns(study.header, study.rows, HEADLINE), failed)
    return Section(text + "\n" + RESULTS_LEGEND,
                   (atomic_write_text(study.folder / "results.csv",
                                      to_csv(study.header, study.rows)),))


def leakage_section(study: StudyRuns) -> Section:
    return Section(leakage_lines(study.finished))


def data_audit_section(study: StudyRuns) -> Section:
    return Section(data_audit_lines(study.finished))


def best_section(study: StudyRuns) -> Section:
    """Which configuration to take, where there is a choice."""
    if len(study.labels) < 2:
        return Section()
    return Section("\n" + best_line(study.finished, study.labels))


def comparisons_section(study: StudyRuns) -> Section:
    """Configurations that differ in one axis, paired, with their tests; the pairs refused."""
    compared = comparison_rows(one_axis_pairs(study.configs))
    refused = refused_lines(compared.refused)
    if not compared.rows:
        return Section(refused)
    text = ("\n## Paired comparisons\n\n" + to_markdown(COMPARISON_COLUMNS, compared.rows, [])
            + "\n" + COMPARISON_LEGEND + refused)
    return Section(text, (atomic_write_text(study.folder / "comparisons.csv",
                                            to_csv(COMPARISON_COLUMNS, compared.rows)),))


def screening_section(study: StudyRuns) -> Section:
    """Each run's screening numbers at the operating points chosen on validation."""
    screened = screening_rows(study.finished, study.labels)
    if not screened:
        return Section()
    return Section("\n## Screening: referable DR (grade ≥ 2), test set\n\n"
                   + to_markdown(SCREENING_COLUMNS, screened, []) + "\n" + SCREENING_LEGEND,
                   (atomic_write_text(study.folder / "screening.csv",
                                      to_csv(SCREENING_COLUMNS, screened)),))


def details_section(study: StudyRuns) -> Section:
    """The results table's other columns: recall per grade, the lab's column, the cost."""
    if not study.rows:
        return Section()
    columns = [column for column in study.header if column not in HEADLINE[2:]]
    return Section("\n## Each configuration in detail\n\n"
                   + to_markdown(*only_columns(study.header, study.rows, columns), [])
                   + "\n" + DETAILS_LEGEND)


def reproduction_section(study: StudyRuns) -> Section:
    """Each reproduced run beside its original, with a verdict."""
    reproduced = reproduction_table(study.runs)
    if not reproduced:
        return Section()
    return Section("\n## Original and reproduced runs\n\n"
                   + to_markdown(REPRODUCTION_COLUMNS, reproduced, []) + "\n"
                   + REPRODUCTION_LEGEND,
                   (atomic_write_text(study.folder / REPRODUCTION_FILE,
                                      to_csv(REPRODUCTION_COLUMNS, reproduced)),))


def cross_validation_section(study: StudyRuns) -> Section:
    """The cross-validated configurations' pooled folds: a table, each fold ensemble's
    screening report, and their predictions files."""
    rows, reports, files = [], [], []
    for config in cross_validated(study.configs):
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
        files += write_pool_files(pool, study.folder)
    if not rows:
        return Section()
    files.insert(0, atomic_write_text(study.folder / "cross_validation.csv",
                                      to_csv(CROSS_VALIDATION_COLUMNS, rows)))
    text = ("\n## Cross-validation\n\n" + to_markdown(CROSS_VALIDATION_COLUMNS, rows, [])
            + "\n" + CROSS_VALIDATION_LEGEND + "".join(f"\n{report}" for report in reports))
    return Section(text, tuple(files))


# results.md, in this order. A new section: a function StudyRuns -> Section, added here.
SECTIONS: tuple[Callable[[StudyRuns], Section], ...] = (
    results_section, leakage_section, data_audit_section, best_section, comparisons_section,
    cross_validation_section, screening_section, details_section, reproduction_section)


def write_report(runs: list[RunRecord], folder: Path, title: str,
                 draw: bool | None = None) -> list[Path]:
    """The study's tables and figures as files in folder: results.md (its sections), the files
    each section wrote, the figures and report.html. draw: whether to draw the figures (a sweep's
    own plots setting); None: unless every run ran with plots=false (a report rebuilt later)."""
    folder.mkdir(parents=True, exist_ok=True)
    study = StudyRuns(runs, folder, *results_table(runs))
    sections = [section(study) for section in SECTIONS]
    text = f"# {title}\n\n" + "".join(section.text for section in sections)
    files = [atomic_write_text(folder / RESULTS_FILE, text)]
    files += [path for section in sections for path in section.files]
    if study.finished and (_drawn(study.finished) if draw is None else draw):
        files += _figures(study.finished, study.labels, folder, title)
    figures = [path for path in files if path.suffix == ".png"]
    files.append(atomic_write_text(folder / PAGE_FILE, html_page(title, text, figures)))
    return files


def _drawn(finished: list[RunRecord]) -> bool:
    """Whether the study draws its figures: unless every run of it ran with plots=false (a
    search of many runs, whose runs drew none either). Runs logged before the key: drawn."""
    return any(run.params.get("plots", "True") != "False" for run in finished)


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
