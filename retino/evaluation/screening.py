"""A run's screening report: what a DR-screening paper reports of referable DR (grade >= 2).

- Two operating points chosen on the validation split and applied unchanged to test: the
  sensitivity target (`referable_sensitivity_target`: that sensitivity, the best specificity)
  and the specificity target (`referable_specificity_target`: the reverse); without a
  validation split, the predicted grade, said so. The per-patient rows use points chosen the
  same way on the validation patients.
- At each: sensitivity, specificity, PPV and NPV with the counts behind them and 95 % intervals
  that count a patient's eyes together and never collapse (retino/evaluation/intervals.py);
  PPV and NPV at the test set's prevalence.
- Of which photographs (retino/core/metric_names.py): all photographs, the gradable ones,
  and all with those not gradable counted as "refer", under those names everywhere.
- Per image and per patient (worse eye, truth from every eye): screening programmes refer
  people, so a patient is referable when either eye is, and is flagged when either eye is.
- Calibration: Brier score and expected calibration error of P(referable) and of the grade
  probabilities.

A set whose names carry no patient identity (APTOS, IDRiD, Messidor-2 as prepared) has one image
per patient: the per-patient rows would repeat the per-image ones, so they are left out and the
report says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss

from retino.core.grades import (
    GRADE_COLUMN,
    PATIENT_COLUMN,
    PREDICTED_COLUMN,
    PROBABILITY_COLUMNS,
    REFERABLE_GRADE,
)
from retino.core.metric_names import (
    ALL_PHOTOGRAPHS,
    GRADABLE_PHOTOGRAPHS,
    UNGRADABLE_REFERRED,
    imageability_key,
    population_key,
    screening_key,
)
from retino.evaluation.intervals import auc_interval, proportion_interval, wilson_bounds
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
    rule: str = ""  # the comparison that flags, as the report prints it: "≥ 0.4123"

    def flags(self, frame: pd.DataFrame) -> np.ndarray:
        if np.isnan(self.threshold):
            flagged = frame[PREDICTED_COLUMN].to_numpy() >= REFERABLE_GRADE
        else:
            flagged = referable_scores(frame) >= self.threshold
        if self.refer_ungradable and "gradable" in frame:
            flagged = flagged | ~frame["gradable"].to_numpy(bool)
        return flagged

    def referring_ungradable(self) -> OperatingPoint:
        """The same point where every photograph that is not gradable counts as "refer", as
        the IDx-DR trial counted them."""
        return replace(self, refer_ungradable=True)


AT_PREDICTED_GRADE = OperatingPoint("predicted grade", "at_predicted_grade", float("nan"),
                                    "no validation split: flagged when the predicted grade "
                                    "is 2 or more")


def operating_points(val: pd.DataFrame | None, sensitivity_target: float,
                     specificity_target: float) -> list[OperatingPoint]:
    """The two operating points chosen on the validation split (those it can choose); the
    predicted grade alone when it has none."""
    if val is None:
        return [AT_PREDICTED_GRADE]
    grades, scores = val[GRADE_COLUMN].to_numpy(), referable_scores(val)
    sensitive = threshold_for_sensitivity(grades, scores, sensitivity_target)
    specific = threshold_for_specificity(grades, scores, specificity_target)
    points = [OperatingPoint("sensitivity target", "at_target", sensitive,
                             f"validation sensitivity ≥ {sensitivity_target:g}",
                             rule=f"≥ {sensitive:.6g}"),
              # flagged above the highest score it must leave unflagged: "≥ 0.4" would claim
              # that a score of exactly 0.4 is flagged, and it is not
              OperatingPoint("specificity target", "at_spec_target", specific,
                             f"validation specificity ≥ {specificity_target:g}",
                             rule=f"> {np.nextafter(specific, -np.inf):.6g}")]
    return [point for point in points if not np.isnan(point.threshold)] or [AT_PREDICTED_GRADE]


def worse_eye(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per patient: the worse eye's grade, the higher referable score and the higher
    predicted grade (flagged when either eye is), and (where assessed) whether every one of
    their photographs was gradable."""
    score = referable_column(frame)
    columns = {GRADE_COLUMN: (GRADE_COLUMN, "max"), score: (score, "max"),
               PREDICTED_COLUMN: (PREDICTED_COLUMN, "max")}
    if "gradable" in frame:
        columns["gradable"] = ("gradable", "min")
    return frame.groupby(PATIENT_COLUMN, sort=False).agg(**columns).reset_index()


@dataclass(frozen=True)
class Proportion:
    """count / total with its 95 % interval: Wilson's, over the cases divided by the design
    effect of the patients they belong to (intervals.proportion_interval)."""

    count: int
    total: int
    interval: tuple[float, float]

    @property
    def value(self) -> float:
        return self.count / self.total if self.total else np.nan


def proportion(hits: np.ndarray, patients: np.ndarray) -> Proportion:
    """The share of hits among these cases, its interval counting a patient's cases together."""
    hits = np.asarray(hits, bool)
    return Proportion(int(hits.sum()), len(hits), proportion_interval(hits, patients))


def _rates(referable: np.ndarray, flagged: np.ndarray,
           patients: np.ndarray) -> dict[str, Proportion]:
    """Sensitivity, specificity, PPV and NPV: each the share of hits among its cases."""
    cases = {"sensitivity": (referable, flagged), "specificity": (~referable, ~flagged),
             "ppv": (flagged, referable), "npv": (~flagged, ~referable)}
    return {rate: proportion(hit[among], patients[among])
            for rate, (among, hit) in cases.items()}


@dataclass
class LevelReport:
    """The screening numbers of one level: images, or patients by their worse eye."""

    level: str  # "image" | "patient"
    cases: int
    referable: int
    auc: float
    auc_interval: tuple[float, float]
    rates: dict[str, dict[str, Proportion]] = field(default_factory=dict)  # point -> rate ->
    left_out: int = 0  # patients with a photograph not gradable, not in these rows

    @property
    def prevalence(self) -> float:
        return self.referable / self.cases if self.cases else np.nan


def level_report(frame: pd.DataFrame, level: str, points: list[OperatingPoint]) -> LevelReport:
    """AUC and the rates at each operating point of these cases, each with its interval, a
    patient's eyes counted together (intervals.py)."""
    referable = frame[GRADE_COLUMN].to_numpy() >= REFERABLE_GRADE
    score = referable_scores(frame)
    patients = frame[PATIENT_COLUMN].to_numpy()
    report = LevelReport(level, len(frame), int(referable.sum()), referable_auc(referable, score),
                         auc_interval(referable, score, patients))
    for point in points:
        report.rates[point.name] = _rates(referable, point.flags(frame), patients)
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
    slope: float = np.nan  # Cox's recalibration of P(referable): 1 when calibrated
    intercept: float = np.nan  # ... 0 when calibrated


def calibration_slope_intercept(outcome: np.ndarray,
                                probability: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) of Cox's logistic recalibration, logit P(outcome) = intercept +
    slope × logit(probability): slope 1 and intercept 0 when the probabilities mean what they
    say; a slope below 1, probabilities too extreme; above 1, too timid (nan with one kind of
    outcome)."""
    outcome = np.asarray(outcome, bool)
    if outcome.all() or not outcome.any():
        return np.nan, np.nan
    clipped = np.clip(np.asarray(probability, float), 1e-6, 1 - 1e-6)
    fit = LogisticRegression(C=np.inf).fit(np.log(clipped / (1 - clipped))[:, None], outcome)
    return float(fit.coef_[0, 0]), float(fit.intercept_[0])


def calibration(frame: pd.DataFrame) -> Calibration | None:
    """How far the predicted probabilities are from the frequencies they predict (nan for no
    photograph: a set none of whose photographs is gradable); None for a regression head,
    whose output is a grade, not a probability."""
    if is_regression_frame(frame):
        return None
    if frame.empty:
        return Calibration(np.nan, np.nan, np.nan, np.nan)
    referable = frame[GRADE_COLUMN].to_numpy() >= REFERABLE_GRADE
    p_referable = np.clip(frame["p_referable"].to_numpy(), 0, 1)
    probs = frame[PROBABILITY_COLUMNS].to_numpy()
    probs = probs / probs.sum(axis=1, keepdims=True)
    truth = np.eye(len(PROBABILITY_COLUMNS))[frame[GRADE_COLUMN].to_numpy()]
    correct = probs.argmax(axis=1) == frame[GRADE_COLUMN].to_numpy()
    return Calibration(float(brier_score_loss(referable, p_referable, pos_label=True)),
                       expected_calibration_error(referable, p_referable),
                       float(((probs - truth) ** 2).sum(axis=1).mean()),
                       expected_calibration_error(correct, probs.max(axis=1)),
                       *calibration_slope_intercept(referable, p_referable))


def grade_recalls(frame: pd.DataFrame) -> dict[int, Proportion]:
    """Per grade the test set holds, the share of its photographs given that grade, with its
    interval (a patient's eyes counted together)."""
    grades, predicted = frame[GRADE_COLUMN].to_numpy(), frame[PREDICTED_COLUMN].to_numpy()
    patients = frame[PATIENT_COLUMN].to_numpy()
    return {int(g): proportion(predicted[grades == g] == g, patients[grades == g])
            for g in np.unique(grades)}


def at_prevalence(sensitivity: float, specificity: float, prevalence: float) -> tuple[float,
                                                                                       float]:
    """(PPV, NPV) at another prevalence, by Bayes' rule from sensitivity and specificity."""
    flagged_right = sensitivity * prevalence
    flagged_wrong = (1 - specificity) * (1 - prevalence)
    cleared_right = specificity * (1 - prevalence)
    cleared_wrong = (1 - sensitivity) * prevalence
    return (flagged_right / (flagged_right + flagged_wrong),
            cleared_right / (cleared_right + cleared_wrong))


def programme_values(rates: dict[str, Proportion], prevalence: float
                     ) -> dict[str, tuple[float, float, float]]:
    """PPV and NPV at the programme's prevalence, each (value, low, high): both rise with
    sensitivity and specificity, so the bounds come from those rates' bounds."""
    sens, spec = rates["sensitivity"], rates["specificity"]
    values = at_prevalence(sens.value, spec.value, prevalence)
    low = at_prevalence(sens.interval[0], spec.interval[0], prevalence)
    high = at_prevalence(sens.interval[1], spec.interval[1], prevalence)
    return {"ppv": (values[0], low[0], high[0]), "npv": (values[1], low[1], high[1])}


SAMPLE_SIZE_HALF_WIDTH = 0.05  # ± points a sample-size statement asks of a sensitivity


def patients_needed(sensitivity: float, half_width: float = SAMPLE_SIZE_HALF_WIDTH) -> int:
    """The fewest referable patients whose 95 % Wilson interval around this sensitivity is no
    wider than ± half_width."""
    low, high = 1, 1_000_000
    while low < high:
        middle = (low + high) // 2
        bottom, top = wilson_bounds(sensitivity, middle)
        low, high = (low, middle) if (top - bottom) / 2 <= half_width else (middle + 1, high)
    return low


@dataclass
class Population:
    """The screening numbers of one set of photographs (metric_names): per image and, where
    patients have several images, per patient."""

    name: str  # ALL_PHOTOGRAPHS, GRADABLE_PHOTOGRAPHS, UNGRADABLE_REFERRED
    levels: list[LevelReport]
    has_score: bool = True  # False where "refer" is not a score: no AUC, no calibration
    calibration: Calibration | None = None  # of its photographs' P(referable)

    def level(self, level: str) -> LevelReport | None:
        return next((report for report in self.levels if report.level == level), None)


@dataclass
class ScreeningReport:
    """The test set's screening numbers at the operating points chosen on validation."""

    points: list[OperatingPoint]  # of the image rows
    patient_points: list[OperatingPoint]  # of the patient rows
    populations: list[Population]  # gradable, all, not gradable = refer; all alone unassessed
    imageability: Proportion | None = None  # gradable photographs; None: not assessed
    recalls: dict[int, Proportion] = field(default_factory=dict)  # per grade, gradable ones
    programme_prevalence: float | None = None  # PPV and NPV are also given at it

    def population(self, name: str) -> Population | None:
        return next((p for p in self.populations if p.name == name), None)

    @property
    def main(self) -> Population:
        """The photographs the model grades: the gradable ones where quality was assessed."""
        return self.population(GRADABLE_PHOTOGRAPHS) or self.populations[0]

    @property
    def calibration(self) -> Calibration | None:
        """The main photographs' (None: a regression head, which gives no probabilities)."""
        return self.main.calibration

    @property
    def by_image(self) -> LevelReport:
        return self.main.levels[0]

    @property
    def by_patient(self) -> LevelReport | None:
        return self.main.level("patient")

    def points_of(self, level: LevelReport) -> list[OperatingPoint]:
        return self.patient_points if level.level == "patient" else self.points

    def metrics(self, split: str = "test") -> dict[str, float]:
        """Every number of the report as MLflow metrics (keys: metric_names): per population
        and level, the prevalence, the AUC and every rate at every point with its interval;
        the imageability, the high-specificity threshold and calibration."""
        metrics = {}
        for population in self.populations:
            for level in population.levels:
                metrics |= _level_metrics(population, level, self.points_of(level), split)
        if self.imageability is not None:
            metrics |= {imageability_key(split=split): self.imageability.value,
                        imageability_key("low", split): self.imageability.interval[0],
                        imageability_key("high", split): self.imageability.interval[1]}
        for level, points in (("", self.points), ("patient_", self.patient_points)):
            for point in points:  # (the image sensitivity target's is a headline key already)
                if level or point.suffix == "at_spec_target":
                    at = "_spec_target" if point.suffix == "at_spec_target" else ""
                    metrics[f"{split}_{level}referable_threshold{at}_selected"] = point.threshold
        for population in self.populations:
            metrics |= _calibration_metrics(population, split)
        return metrics


def _calibration_metrics(population: Population, split: str) -> dict[str, float]:
    """A population's calibration as metrics (population_key: the gradable photographs' keys
    say so)."""
    c = population.calibration
    if c is None:
        return {}
    return {population_key(name, population.name, split): value for name, value in (
        ("referable_brier", c.referable_brier), ("referable_ece", c.referable_ece),
        ("referable_calibration_slope", c.slope),
        ("referable_calibration_intercept", c.intercept),
        ("grade_brier", c.grade_brier), ("grade_ece", c.grade_ece))}


def _level_metrics(population: Population, level: LevelReport, points: list[OperatingPoint],
                   split: str) -> dict[str, float]:
    """One level's numbers as metrics, keyed by screening_key."""
    def key(measure: str, point: str = "", bound: str = "") -> str:
        return screening_key(measure, population.name, level.level, point, bound, split)

    metrics = {key("prevalence"): level.prevalence}
    if population.has_score:
        metrics |= {key("auc"): level.auc, key("auc", bound="low"): level.auc_interval[0],
                    key("auc", bound="high"): level.auc_interval[1]}
    for point in points:
        for rate, share in level.rates[point.name].items():
            metrics |= {key(rate, point.suffix): share.value,
                        key(rate, point.suffix, "low"): share.interval[0],
                        key(rate, point.suffix, "high"): share.interval[1]}
    return metrics


def by_patient(frame: pd.DataFrame) -> pd.DataFrame | None:
    """One row per patient from every one of their photographs (worse_eye); None when each
    image is its own patient (no patient identities: the rows would repeat the images')."""
    patients = worse_eye(frame)
    return patients if len(patients) < len(frame) else None


def imageability(frame: pd.DataFrame) -> Proportion | None:
    """The share of photographs gradable, with its interval; None when not assessed."""
    if "gradable" not in frame:
        return None
    return proportion(frame["gradable"].to_numpy(bool), frame[PATIENT_COLUMN].to_numpy())


def fully_gradable(patients: pd.DataFrame) -> pd.DataFrame:
    """The patients all of whose photographs are gradable (all of them where quality was not
    assessed)."""
    return patients[patients["gradable"].to_numpy(bool)] if "gradable" in patients else patients


def patient_points(val: pd.DataFrame | None, sensitivity_target: float,
                   specificity_target: float) -> list[OperatingPoint]:
    """The operating points of the per-patient rows, chosen on the validation split's patients
    (worse eye, every photograph of theirs gradable), as the image points are chosen on its
    images; without patient identities in validation, the image points' own choice."""
    patients = by_patient(val) if val is not None else None
    if patients is None:
        return operating_points(gradable_rows(val), sensitivity_target, specificity_target)
    return [replace(point, chosen=f"{point.chosen} over validation patients")
            if not np.isnan(point.threshold) else point
            for point in operating_points(fully_gradable(patients), sensitivity_target,
                                          specificity_target)]


def _population(name: str, images: pd.DataFrame, patients: pd.DataFrame | None,
                points: list[OperatingPoint], per_patient: list[OperatingPoint],
                left_out: int = 0) -> Population:
    """A population's image rows and, with patient identities, its patient rows."""
    refer = name == UNGRADABLE_REFERRED

    def counted(chosen: list[OperatingPoint]) -> list[OperatingPoint]:
        return [point.referring_ungradable() for point in chosen] if refer else chosen
    levels = [level_report(images, "image", counted(points))]
    calibrated = None if refer else calibration(images)
    if patients is not None:
        levels.append(level_report(patients, "patient", counted(per_patient)))
        levels[-1].left_out = left_out
    return Population(name, levels, has_score=not refer, calibration=calibrated)


def screening_report(test: pd.DataFrame, val: pd.DataFrame | None, sensitivity_target: float,
                     specificity_target: float, points: list[OperatingPoint] | None = None,
                     programme_prevalence: float | None = None) -> ScreeningReport:
    """The screening report of a run's test predictions, its operating points chosen on val
    (images for the image rows, patients for the patient rows), or given (an external
    evaluation applies the trained run's own to both). Where the photographs' quality was
    assessed (a `gradable` column), three populations (metric_names): the gradable
    photographs, all photographs, and all with those not gradable counted as "refer"."""
    per_patient = patient_points(val, sensitivity_target, specificity_target) if points is None \
        else [replace(point, chosen=f"{point.chosen}; the per-image threshold, applied to "
                      "patients") if not np.isnan(point.threshold) else point for point in points]
    points = points or operating_points(gradable_rows(val), sensitivity_target,
                                        specificity_target)
    patients = by_patient(test)
    populations = [_population(ALL_PHOTOGRAPHS, test, patients, points, per_patient)]
    if "gradable" in test:
        complete = None if patients is None else fully_gradable(patients)
        left_out = 0 if patients is None else len(patients) - len(complete)
        populations = [_population(GRADABLE_PHOTOGRAPHS, gradable_rows(test), complete, points,
                                   per_patient, left_out), populations[0],
                       _population(UNGRADABLE_REFERRED, test, patients, points, per_patient)]
    gradable = gradable_rows(test)
    return ScreeningReport(points, per_patient, populations, imageability(test),
                           grade_recalls(gradable), programme_prevalence)


def _percent(value: float) -> str:
    return "nan" if np.isnan(value) else f"{100 * value:.1f}"


def _bounds(interval: tuple[float, float]) -> str:
    low, high = interval
    return "" if np.isnan(low) else f" [{_percent(low)}, {_percent(high)}]"


def proportion_cell(p: Proportion) -> str:
    """'91.2 (456/500) [88.4, 93.6]': the value, the counts and the 95 % interval."""
    return f"{_percent(p.value)} ({p.count}/{p.total}){_bounds(p.interval)}"


def auc_cell(report: LevelReport) -> str:
    if np.isnan(report.auc_interval[0]):
        return f"{report.auc:.3f}"
    low, high = report.auc_interval
    return f"{report.auc:.3f} [{low:.3f}, {high:.3f}]"


SCREENING_LEGEND = """\
Each rate is `value % (count/total) [95 % interval]`. Intervals count a patient's eyes together:
a rate's is Wilson's score interval over its cases divided by their design effect (how far a
patient's eyes agree; at its worst where no patient holds the rarer outcome, at its estimate
from 5 patients, and in between in step), an
AUC's the same score form over its effective number of cases from DeLong's variance clustered by
patient (Obuchowski), never below a quarter of Hanley & McNeil's. Neither collapses at 0 % or
100 %. Of which photographs: "all photographs" scores every photograph as if it were gradable;
"gradable photographs" only those gradable (per patient: the patients all of whose photographs
are gradable; the others are left out, and said so); "not gradable = refer" counts every
photograph, those not gradable as referred. A patient (worse eye) is referable when either eye
is, and is flagged when either eye is; the per-patient rows use operating points chosen on the
validation patients. PPV and NPV hold at this test set's prevalence only. Calibration: Brier
score (0 is perfect) and expected calibration error over 10 equal-width bins of P(referable),
and of the five grade probabilities (ECE of the top grade's probability against being right).
"""


def calibration_sentence(c: Calibration | None) -> str:
    if c is None:
        return ("Calibration: none: the regression head's output is a grade on a scale, not a "
                "probability (its referable ranking, AUC and operating points stand).")
    return (f"Calibration of P(referable), gradable photographs: Brier {c.referable_brier:.4f}, "
            f"ECE {c.referable_ece:.4f}, slope {c.slope:.2f} and intercept {c.intercept:+.2f} "
            "(1 and 0 when calibrated); of the grade probabilities: Brier "
            f"{c.grade_brier:.4f}, ECE {c.grade_ece:.4f}.")


def _flow_lines(report: ScreeningReport) -> list[str]:
    """The STARD flow of the test photographs: listed and scored, gradable, referable or not
    by the reference grade, and where the sensitivity target put them; per image and patient."""
    everything = report.population(ALL_PHOTOGRAPHS)
    listed = everything.levels[0].cases
    people = everything.level("patient")
    lines = [f"- {listed} photographs" + (f" of {people.cases} patients" if people else "")
             + " in the test split, each read and scored by the model"]
    if report.imageability is not None:
        gradable = report.main.level("patient")
        lines.append(f"- {report.imageability.count} gradable, "
                     f"{listed - report.imageability.count} not gradable"
                     + (f"; {gradable.cases} patients with every photograph gradable, "
                        f"{gradable.left_out} with one not" if gradable else ""))
    for level in report.main.levels:
        point = report.points_of(level)[0]  # the patients' points may differ from the images'
        rates = level.rates[point.name]
        sens, spec = rates["sensitivity"], rates["specificity"]
        lines.append(f"- {report.main.name}, {level.level}s: {level.referable} referable, "
                     f"{level.cases - level.referable} not (reference grade ≥ 2); at the "
                     f"{point.name}: {sens.count} true positives, {sens.total - sens.count} "
                     f"false negatives, {spec.total - spec.count} false positives, "
                     f"{spec.count} true negatives")
    return lines


def _grading_line(report: ScreeningReport) -> str:
    cells = ", ".join(f"grade {grade} {proportion_cell(share)}"
                      for grade, share in report.recalls.items())
    return f"Recall per grade %, {report.main.name} (k/n) [95 %]: {cells}."


def _programme_lines(report: ScreeningReport) -> list[str]:
    """PPV and NPV at the programme's prevalence, or how to ask for them."""
    prevalence = report.programme_prevalence
    if prevalence is None:
        return ["PPV and NPV above hold at this test set's prevalence; "
                "`programme_prevalence=0.07` (say) gives them at a programme's as well."]
    lines = [f"At a programme prevalence of {100 * prevalence:.1f} % (`programme_prevalence`), "
             f"{report.main.name}:", ""]
    for level in report.main.levels:
        for point in report.points_of(level):
            values = programme_values(level.rates[point.name], prevalence)
            cells = "; ".join(f"{name.upper()} {_percent(v)} [{_percent(lo)}, {_percent(hi)}]"
                              for name, (v, lo, hi) in values.items())
            lines.append(f"- {level.level}, {point.name}: {cells}")
    return lines


def _sample_size_line(report: ScreeningReport) -> str:
    """How many referable patients the reported sensitivity's precision rests on, and would
    need for ± SAMPLE_SIZE_HALF_WIDTH."""
    level = report.main.level("patient") or report.main.levels[0]
    point = report.points_of(level)[0]
    sens = level.rates[point.name]["sensitivity"]
    if not sens.total:
        return "Sample size: no referable case in the test set: no sensitivity to size."
    low, high = sens.interval
    cases = "patients" if level.level == "patient" else "photographs (one per patient)"
    return (f"Sample size: the {point.name}'s sensitivity, {_percent(sens.value)} % over "
            f"{sens.total} referable {cases}, is known to ±{50 * (high - low):.1f} points; "
            f"±{100 * SAMPLE_SIZE_HALF_WIDTH:.0f} points would need "
            f"{patients_needed(sens.value)} referable patients.")


def _count_lines(report: ScreeningReport) -> list[str]:
    """Imageability, and per population and level the cases, prevalence and AUC."""
    if report.imageability is None:
        lines = ["- Imageability: not assessed (the set's photographs were prepared without a "
                 "quality assessment): every photograph is graded."]
    else:
        lines = [f"- Imageability {proportion_cell(report.imageability)} %: the share of "
                 "photographs gradable"]
    for population in report.populations:
        for level in population.levels if population.has_score else ():
            left = (f"; {level.left_out} patients with a photograph not gradable left out"
                    if level.left_out else "")
            lines.append(f"- {population.name}: {level.cases} {level.level}s, {level.referable} "
                         f"referable (prevalence {_percent(level.prevalence)} %); referable "
                         f"AUC {auc_cell(level)}{left}")
    if report.by_patient is None:
        lines.append("- Each image is its own patient (the image names carry no patient "
                     "identity): there is no per-patient row.")
    return lines


def _point_lines(report: ScreeningReport) -> list[str]:
    """How each operating point flags, and where it was chosen."""
    score = "P(referable)" if report.calibration else "the regression output"
    lines = []
    for level, points in (("images", report.points), ("patients", report.patient_points)):
        if level == "patients" and report.by_patient is None:
            continue
        lines += [f"- **{point.name}** ({level}): " + (
            point.chosen if np.isnan(point.threshold) else
            f"{score} {point.rule} ({point.chosen})") for point in points]
    chosen = {point.name for point in report.points}
    if chosen & {"sensitivity target", "specificity target"}:
        lines += [f"- **{name}**: none: the validation split lacks the images it is chosen on "
                  f"({needs})" for name, needs in (
                      ("sensitivity target", "referable ones"),
                      ("specificity target", "non-referable ones")) if name not in chosen]
    return lines


def screening_markdown(report: ScreeningReport, title: str = "Referable DR screening") -> str:
    """The report as a Markdown section: counts and prevalence, the operating points, the rates
    of each population per image and per patient, calibration."""
    lines = [f"## {title} (test set, grade ≥ 2)", "", *_count_lines(report), "",
             "Flow of the test photographs:", "", *_flow_lines(report), "",
             "Operating points, chosen on the validation split and applied unchanged to test:",
             "", *_point_lines(report)]
    header = ["photographs", "level", "operating point",
              *(f"{rate} % (k/n) [95 %]" for rate in ("sensitivity", "specificity", "PPV", "NPV"))]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for population in report.populations:
        for level in population.levels:
            where = "patient (worse eye)" if level.level == "patient" else "image"
            for name, rates in level.rates.items():
                lines.append(f"| {population.name} | {where} | {name} | "
                             + " | ".join(proportion_cell(rates[rate]) for rate in RATES) + " |")
    lines += ["", *_programme_lines(report), "", _sample_size_line(report), "",
              _grading_line(report), "", calibration_sentence(report.calibration), "",
              SCREENING_LEGEND]
    return "\n".join(lines)
