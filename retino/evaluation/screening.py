"""A run's screening report: what a DR-screening paper reports of referable DR (grade >= 2).

- Two operating points chosen on the validation split and applied unchanged to test: the
  sensitivity target (`referable_sensitivity_target`: that sensitivity, the best specificity)
  and the specificity target (`referable_specificity_target`: the reverse); without a
  validation split, the predicted grade, said so.
- At each: sensitivity and specificity with 95 % Wilson intervals (each case independent) and
  patient-bootstrap intervals (a patient's eyes drawn together), PPV and NPV at the test set's
  prevalence, and the counts behind them.
- Per image and per patient (worse eye): screening programmes refer people, so a patient is
  referable when either eye is, and is flagged when either eye is (the higher P(referable)).
- Calibration: Brier score and expected calibration error of P(referable) and of the grade
  probabilities.

A set whose names carry no patient identity (APTOS, IDRiD, Messidor-2 as prepared) has one image
per patient: the per-patient rows would repeat the per-image ones, so they are left out and the
report says its intervals resample images.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from sklearn.metrics import brier_score_loss

from retino.core.grades import PROBABILITY_COLUMNS, REFERABLE_GRADE
from retino.evaluation.intervals import (
    MIN_REFERABLE_PATIENTS,
    percentile_interval,
    referable_patients,
    resampled_rows,
)
from retino.evaluation.metrics import (
    referable_auc,
    referable_column,
    referable_scores,
    threshold_for_sensitivity,
    threshold_for_specificity,
)
from retino.evaluation.predictions import gradable_rows, is_regression_frame

RATES = ("sensitivity", "specificity", "ppv", "npv")
CALIBRATION_BINS = 10  # equal-width bins of the predicted probability


@dataclass(frozen=True)
class OperatingPoint:
    """Where P(referable) flags an image: a threshold chosen on validation, or (threshold nan)
    the predicted grade, for a run with no validation split to choose one on."""

    name: str  # "sensitivity target", "specificity target", "predicted grade"
    suffix: str  # of its metric keys: test_referable_ppv_<suffix>
    threshold: float
    chosen: str  # how it was chosen, for the report
    refer_ungradable: bool = False  # a photograph that is not gradable is referred

    def flags(self, frame: pd.DataFrame) -> np.ndarray:
        if np.isnan(self.threshold):
            flagged = frame["predicted"].to_numpy() >= REFERABLE_GRADE
        else:
            flagged = referable_scores(frame) >= self.threshold
        if self.refer_ungradable and "gradable" in frame:
            flagged = flagged | ~frame["gradable"].to_numpy(bool)
        return flagged

    def referring_ungradable(self) -> OperatingPoint:
        """The same point where every photograph that is not gradable counts as "refer", as
        the IDx-DR trial counted them."""
        return replace(self, name=f"{self.name}, not gradable = refer",
                       suffix=f"{self.suffix}_ungradable_refer", refer_ungradable=True)


AT_PREDICTED_GRADE = OperatingPoint("predicted grade", "at_predicted_grade", float("nan"),
                                    "no validation split: flagged when the predicted grade "
                                    "is 2 or more")


def operating_points(val: pd.DataFrame | None, sensitivity_target: float,
                     specificity_target: float) -> list[OperatingPoint]:
    """The two operating points chosen on the validation split (those it can choose); the
    predicted grade alone when it has none."""
    if val is None:
        return [AT_PREDICTED_GRADE]
    grades, scores = val["grade"].to_numpy(), referable_scores(val)
    points = [OperatingPoint("sensitivity target", "at_target",
                             threshold_for_sensitivity(grades, scores, sensitivity_target),
                             f"validation sensitivity ≥ {sensitivity_target:g}"),
              OperatingPoint("specificity target", "at_spec_target",
                             threshold_for_specificity(grades, scores, specificity_target),
                             f"validation specificity ≥ {specificity_target:g}")]
    return [point for point in points if not np.isnan(point.threshold)] or [AT_PREDICTED_GRADE]


def worse_eye(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per patient: the worse eye's grade, the higher referable score and the higher
    predicted grade (flagged when either eye is), and (where assessed) whether every one of
    their photographs was gradable."""
    score = referable_column(frame)
    columns = {"grade": ("grade", "max"), score: (score, "max"),
               "predicted": ("predicted", "max")}
    if "gradable" in frame:
        columns["gradable"] = ("gradable", "min")
    return frame.groupby("patient", sort=False).agg(**columns).reset_index()


def wilson_interval(count: int, total: int, level: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of count / total (SciPy's), nan for an empty total."""
    if total == 0:
        return np.nan, np.nan
    interval = binomtest(int(count), int(total)).proportion_ci(confidence_level=level,
                                                               method="wilson")
    return float(interval.low), float(interval.high)


@dataclass(frozen=True)
class Proportion:
    """count / total with its 95 % Wilson and patient-bootstrap intervals."""

    count: int
    total: int
    wilson: tuple[float, float]
    bootstrap: tuple[float, float] = (np.nan, np.nan)

    @property
    def value(self) -> float:
        return self.count / self.total if self.total else np.nan


def _counts(referable: np.ndarray, flagged: np.ndarray) -> dict[str, tuple[int, int]]:
    """Rate name -> (numerator, denominator)."""
    tp = int(np.count_nonzero(referable & flagged))
    fn = int(np.count_nonzero(referable & ~flagged))
    tn = int(np.count_nonzero(~referable & ~flagged))
    fp = int(np.count_nonzero(~referable & flagged))
    return {"sensitivity": (tp, tp + fn), "specificity": (tn, tn + fp),
            "ppv": (tp, tp + fp), "npv": (tn, tn + fn)}


def _rate(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else np.nan


@dataclass
class LevelReport:
    """The screening numbers of one level: images, or patients by their worse eye."""

    level: str  # "image" | "patient"
    cases: int
    referable: int
    auc: float
    auc_interval: tuple[float, float]
    auc_undefined_rounds: int
    rates: dict[str, dict[str, Proportion]] = field(default_factory=dict)  # point -> rate ->

    @property
    def prevalence(self) -> float:
        return self.referable / self.cases if self.cases else np.nan


def level_report(frame: pd.DataFrame, level: str, points: list[OperatingPoint], rounds: int,
                 seed: int = 0) -> LevelReport:
    """AUC and the rates at each operating point of these cases, with Wilson intervals and,
    given rounds, percentile intervals over resampled patients: none for a rate over fewer than
    MIN_REFERABLE_PATIENTS cases, or an AUC over fewer referable patients (a bootstrap of three
    cases says [100, 100])."""
    referable = frame["grade"].to_numpy() >= REFERABLE_GRADE
    score = referable_scores(frame)
    flags = {point.name: point.flags(frame) for point in points}
    samples: dict[tuple[str, str], list[float]] = {}
    aucs = []
    for rows in resampled_rows(frame, rounds, seed) if rounds else ():
        aucs.append(referable_auc(referable[rows], score[rows]))
        for name, flagged in flags.items():
            for rate, (k, n) in _counts(referable[rows], flagged[rows]).items():
                samples.setdefault((name, rate), []).append(_rate(k, n))
    enough_positives = referable_patients(frame) >= MIN_REFERABLE_PATIENTS
    report = LevelReport(level, len(frame), int(referable.sum()), referable_auc(referable, score),
                         percentile_interval(aucs) if aucs and enough_positives
                         else (np.nan, np.nan), int(np.isnan(aucs).sum()) if aucs else 0)
    for name, flagged in flags.items():
        report.rates[name] = {
            rate: Proportion(k, n, wilson_interval(k, n),
                             percentile_interval(samples[name, rate])
                             if rounds and n >= MIN_REFERABLE_PATIENTS else (np.nan, np.nan))
            for rate, (k, n) in _counts(referable, flagged).items()}
    return report


def expected_calibration_error(outcome: np.ndarray, probability: np.ndarray,
                               bins: int = CALIBRATION_BINS) -> float:
    """Σ over equal-width probability bins of (the bin's share of cases) × |mean predicted
    probability − observed frequency|: 0 when, in every bin, what is predicted happens as
    often as predicted."""
    outcome, probability = np.asarray(outcome, float), np.asarray(probability, float)
    which = np.minimum((probability * bins).astype(int), bins - 1)
    total = 0.0
    for b in np.unique(which):
        inside = which == b
        total += inside.mean() * abs(probability[inside].mean() - outcome[inside].mean())
    return float(total)


@dataclass(frozen=True)
class Calibration:
    referable_brier: float  # of P(referable) against referable DR
    referable_ece: float
    grade_brier: float  # of the five grade probabilities (sum over grades, mean over images)
    grade_ece: float  # of the top grade's probability against being right (confidence)


def calibration(frame: pd.DataFrame) -> Calibration | None:
    """How far the predicted probabilities are from the frequencies they predict (nan for no
    photograph: a set none of whose photographs is gradable); None for a regression head,
    whose output is a grade, not a probability."""
    if is_regression_frame(frame):
        return None
    if frame.empty:
        return Calibration(np.nan, np.nan, np.nan, np.nan)
    referable = frame["grade"].to_numpy() >= REFERABLE_GRADE
    p_referable = np.clip(frame["p_referable"].to_numpy(), 0, 1)
    probs = frame[PROBABILITY_COLUMNS].to_numpy()
    probs = probs / probs.sum(axis=1, keepdims=True)
    truth = np.eye(len(PROBABILITY_COLUMNS))[frame["grade"].to_numpy()]
    correct = probs.argmax(axis=1) == frame["grade"].to_numpy()
    return Calibration(float(brier_score_loss(referable, p_referable, pos_label=True)),
                       expected_calibration_error(referable, p_referable),
                       float(((probs - truth) ** 2).sum(axis=1).mean()),
                       expected_calibration_error(correct, probs.max(axis=1)))


@dataclass
class ScreeningReport:
    """The test set's screening numbers at the operating points chosen on validation."""

    points: list[OperatingPoint]
    by_image: LevelReport  # of the gradable photographs, where quality was assessed
    by_patient: LevelReport | None  # None: one image per patient (no patient identities)
    calibration: Calibration | None  # None: a regression head, which gives no probabilities
    imageability: Proportion | None = None  # gradable photographs; None: not assessed
    # every photograph, those not gradable counted as "refer" (only when there are some)
    ungradable_referred: list[LevelReport] = field(default_factory=list)

    def levels(self) -> list[LevelReport]:
        return [self.by_image] + ([self.by_patient] if self.by_patient else [])

    def _referring(self) -> list[OperatingPoint]:
        return [point.referring_ungradable() for point in self.points]

    def metrics(self, prefix: str = "test_") -> dict[str, float]:
        """Keys to log: prevalence, the per-patient AUC, every rate at every point, the
        high-specificity threshold and calibration. When some photographs are not gradable,
        the keys of the gradable ones say so (test_gradable_…); otherwise the image-level
        sensitivity and specificity at the high-sensitivity point or the predicted grade are
        left out: the headline metrics hold them already (`_at_target`, and no suffix)."""
        metrics = {}
        some_not_gradable = bool(self.ungradable_referred)
        for report in self.levels():
            at = prefix + ("gradable_" if some_not_gradable else "") + \
                ("patient_" if report.level == "patient" else "")
            metrics[f"{at}referable_prevalence"] = report.prevalence
            if report.level == "patient" or some_not_gradable:
                metrics[f"{at}referable_auc"] = report.auc
            for point in self.points:
                for rate, proportion in report.rates[point.name].items():
                    headline = report.level == "image" and rate in RATES[:2] and \
                        point.suffix != "at_spec_target" and not some_not_gradable
                    if not headline:
                        metrics[f"{at}referable_{rate}_{point.suffix}"] = proportion.value
        for report in self.ungradable_referred:
            at = prefix + ("patient_" if report.level == "patient" else "")
            for point in self._referring():
                for rate, proportion in report.rates[point.name].items():
                    metrics[f"{at}referable_{rate}_{point.suffix}"] = proportion.value
        if self.imageability is not None:
            metrics[f"{prefix}imageability"] = self.imageability.value
        for point in self.points:
            if point.suffix == "at_spec_target":
                metrics[f"{prefix}referable_threshold_spec_target"] = point.threshold
        c = self.calibration
        if c is None:
            return metrics
        return metrics | {f"{prefix}referable_brier": c.referable_brier,
                          f"{prefix}referable_ece": c.referable_ece,
                          f"{prefix}grade_brier": c.grade_brier, f"{prefix}grade_ece": c.grade_ece}


def _levels(frame: pd.DataFrame, points: list[OperatingPoint], rounds: int,
            seed: int) -> list[LevelReport]:
    """Per image and, where patients have several images, per patient (worse eye)."""
    patients = worse_eye(frame)
    levels = [level_report(frame, "image", points, rounds, seed)]
    if len(patients) < len(frame):
        levels.append(level_report(patients, "patient", points, rounds, seed))
    return levels


def imageability(frame: pd.DataFrame) -> Proportion | None:
    """The share of photographs gradable, with its Wilson interval; None when not assessed."""
    if "gradable" not in frame:
        return None
    count = int(frame["gradable"].to_numpy(bool).sum())
    return Proportion(count, len(frame), wilson_interval(count, len(frame)))


def screening_report(test: pd.DataFrame, val: pd.DataFrame | None, sensitivity_target: float,
                     specificity_target: float, rounds: int = 0, seed: int = 0,
                     points: list[OperatingPoint] | None = None) -> ScreeningReport:
    """The screening report of a run's test predictions, its operating points chosen on val
    (or given: an external evaluation applies the trained run's own). Where the photographs'
    quality was assessed (a `gradable` column), the rates are those of the gradable
    photographs, beside the imageability and, when some are not gradable, the rates of every
    photograph with those counted as "refer"."""
    if points is None:
        points = operating_points(gradable_rows(val), sensitivity_target, specificity_target)
    gradable = gradable_rows(test)
    by_image, *by_patient = _levels(gradable, points, rounds, seed)
    report = ScreeningReport(points, by_image, by_patient[0] if by_patient else None,
                             calibration(gradable), imageability(test))
    if len(gradable) < len(test):
        report.ungradable_referred = _levels(test, report._referring(), rounds, seed)
    return report


def _percent(value: float) -> str:
    return "nan" if np.isnan(value) else f"{100 * value:.1f}"


def _bounds(interval: tuple[float, float]) -> str:
    low, high = interval
    return "" if np.isnan(low) else f" [{_percent(low)}, {_percent(high)}]"


def proportion_cell(p: Proportion) -> str:
    """'91.2 (456/500) [88.4, 93.4] [87.9, 94.0]': the Wilson interval, then the bootstrap's."""
    return f"{_percent(p.value)} ({p.count}/{p.total}){_bounds(p.wilson)}{_bounds(p.bootstrap)}"


def _auc_cell(report: LevelReport) -> str:
    if np.isnan(report.auc_interval[0]):
        return f"{report.auc:.3f}"
    low, high = report.auc_interval
    undefined = (f"; {report.auc_undefined_rounds} resamples undefined"
                 if report.auc_undefined_rounds else "")
    return f"{report.auc:.3f} [{low:.3f}, {high:.3f}{undefined}]"


SCREENING_LEGEND = """\
Each rate is `value % (count/total) [Wilson 95 %] [patient bootstrap 95 %]`: the Wilson interval
takes every case as independent; the bootstrap resamples test patients (both eyes together), the
honest one for images, and is left out below 10 cases (an AUC's: 10 referable patients). A
patient (worse eye) is referable when either eye is, and is flagged when either eye is. PPV and
NPV hold at this test set's prevalence only. Calibration: Brier score (0 is perfect) and
expected calibration error over 10 equal-width bins of P(referable), and of the five grade
probabilities (ECE of the top grade's probability against being right).
"""


def calibration_sentence(c: Calibration | None) -> str:
    if c is None:
        return ("Calibration: none: the regression head's output is a grade on a scale, not a "
                "probability (its referable ranking, AUC and operating points stand).")
    return (f"Calibration of P(referable): Brier {c.referable_brier:.4f}, ECE "
            f"{c.referable_ece:.4f}; of the grade probabilities: Brier {c.grade_brier:.4f}, "
            f"ECE {c.grade_ece:.4f}.")


def screening_markdown(report: ScreeningReport, title: str = "Referable DR screening") -> str:
    """The report as a Markdown section: counts and prevalence, the operating points, the rates
    per image and per patient, calibration."""
    lines = [f"## {title} (test set, grade ≥ 2)", ""]
    if report.imageability is None:
        lines.append("- Imageability: not assessed (the set's photographs were prepared without "
                     "a quality assessment): every photograph is graded.")
    else:
        lines.append(f"- Imageability {proportion_cell(report.imageability)} %: the gradable "
                     "photographs, which the rates below are of"
                     + ("; the last rows count every photograph, those not gradable as "
                        "\"refer\"" if report.ungradable_referred else ""))
    for level in report.levels():
        lines.append(f"- {level.cases} {level.level}s, {level.referable} referable "
                     f"(prevalence {_percent(level.prevalence)} %); referable AUC "
                     f"{_auc_cell(level)}")
    if report.by_patient is None:
        lines.append("- Each image is its own patient (the image names carry no patient "
                     "identity): intervals resample images, and there is no per-patient row.")
    lines += ["", "Operating points, chosen on the validation split and applied unchanged to "
              "test:", ""]
    score = "P(referable)" if report.calibration else "the regression output"
    lines += [f"- **{point.name}**: " + (point.chosen if np.isnan(point.threshold) else
                                         f"{score} ≥ {point.threshold:.4f} ({point.chosen})")
              for point in report.points]
    chosen = {point.name for point in report.points}
    if chosen & {"sensitivity target", "specificity target"}:
        lines += [f"- **{name}**: none: the validation split lacks the images it is chosen on "
                  f"({needs})" for name, needs in (
                      ("sensitivity target", "referable ones"),
                      ("specificity target", "non-referable ones")) if name not in chosen]
    header = ["level", "operating point", *(f"{rate} % (k/n) [Wilson] [bootstrap]"
                                              for rate in ("sensitivity", "specificity", "PPV",
                                                           "NPV"))]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for level in report.levels() + report.ungradable_referred:
        for name, rates in level.rates.items():
            where = "patient (worse eye)" if level.level == "patient" else "image"
            lines.append(f"| {where} | {name} | "
                         + " | ".join(proportion_cell(rates[rate]) for rate in RATES) + " |")
    lines += ["", calibration_sentence(report.calibration), "", SCREENING_LEGEND]
    return "\n".join(lines)
