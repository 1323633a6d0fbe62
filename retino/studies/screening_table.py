"""A study's screening table: per run and set of photographs, the referable-DR numbers a
screening reviewer reads (imageability, AUC, prevalence, sensitivity, specificity, PPV and NPV
at the two operating points chosen on validation, calibration), computed again from each run's
predictions files; screening.csv and a section of the study's report.
"""

from __future__ import annotations

from retino.evaluation.screening import (
    RATES,
    LevelReport,
    ScreeningReport,
    auc_cell,
    proportion_cell,
    screening_report,
)
from retino.studies.comparison import run_names
from retino.tracking.records import RunRecord

_POINTS = {"at_target": "sensitivity target", "at_spec_target": "specificity target"}
SCREENING_COLUMNS = ["run", "photographs", "imageability % (k/n) [95 %]", "counted by",
                     "referable AUC [95 %]", "prevalence %",
                     *(f"{point}: {rate} % (k/n) [95 %]" for point in _POINTS.values()
                       for rate in ("sensitivity", "specificity", "PPV", "NPV")),
                     "Brier of P(referable)", "ECE of P(referable)"]

SCREENING_LEGEND = """\
Per run (a configuration's seeds each have a row), the test set at the two operating points
chosen on its validation split (`referable_sensitivity_target`, `referable_specificity_target`),
counted by patient (the worse eye: referable, and flagged, when either eye is; the points chosen
on the validation patients), or by image for a set whose names carry no patient identity. A run
without a validation split has no operating point: its cells are at the predicted grade, and
say so. Of which photographs, where quality was assessed, in three rows: "gradable photographs"
(per patient: those all of whose photographs are gradable), "all photographs" (every one scored
as if gradable), "not gradable = refer" (every one, those not gradable referred); the same names
as each run's page (report.html, screening.md, with the per-image rates too) and its MLflow
metrics. Intervals: 95 %, a patient's eyes counted together, never of zero width (Wilson's with
the design effect; the AUC's from DeLong's variance, clustered).
"""


def run_screening(run: RunRecord) -> ScreeningReport:
    """The run's screening report from its predictions files, with its own targets."""
    return screening_report(run.test, run.val,
                            float(run.params.get("referable_sensitivity_target", 0.9)),
                            float(run.params.get("referable_specificity_target", 0.9)),
                            programme_prevalence=programme_prevalence(run.params))


def programme_prevalence(params: dict[str, str]) -> float | None:
    """A run's programme_prevalence as logged (None: unset, or a run from before the key)."""
    value = params.get("programme_prevalence")
    return None if value in (None, "None", "") else float(value)


def _screening_cells(report: ScreeningReport, level: LevelReport) -> list[str]:
    """The rates at each named operating point; a run without one shows the predicted grade's
    in the high-sensitivity place, marked, and nothing in the other."""
    cells = []
    chosen = {point.suffix: point for point in report.points_of(level)}
    for suffix in _POINTS:
        point = chosen.get(suffix)
        mark = ""
        if point is None and suffix == "at_target" and "at_predicted_grade" in chosen:
            point, mark = chosen["at_predicted_grade"], " (at predicted grade)"
        if point is None:
            cells += [""] * 4
            continue
        rates = level.rates[point.name]
        cells += [proportion_cell(rates[rate]) + mark for rate in RATES]
    return cells


def _calibration_cells(report: ScreeningReport) -> list[str]:
    """Brier and ECE of P(referable); none for a regression head (no probability)."""
    if report.calibration is None:
        return ["no probability"] * 2
    return [f"{report.calibration.referable_brier:.4f}", f"{report.calibration.referable_ece:.4f}"]


def screening_rows(finished: list[RunRecord], labels: dict[str, str]) -> list[list[str]]:
    """Per run with predictions files, one row per set of photographs (metric_names): its
    screening numbers (SCREENING_COLUMNS)."""
    names = run_names(finished, labels)
    rows = []
    for run in finished:
        if run.test is None:
            continue
        report = run_screening(run)
        imageable = "not assessed" if report.imageability is None else \
            proportion_cell(report.imageability)
        for population in report.populations:
            level = population.level("patient") or population.level("image")
            auc = auc_cell(level) if population.has_score else ""
            # calibration is of the photographs the model grades: on their row only
            calibrated = _calibration_cells(report) if population is report.main else ["", ""]
            rows.append([names[run.run_id], population.name, imageable, level.level, auc,
                         f"{100 * level.prevalence:.1f}", *_screening_cells(report, level),
                         *calibrated])
    return rows
