"""A data set's audit: what its photographs hold besides their grades, in one object.

From the survey of every listed photograph (retino.data.prepare.survey): the groups of one
photograph and which cross splits, the grades they disagree on and the accuracy that caps, patients
whose eyes are graded far apart, the files that cannot be read, the properties per grade and split,
and the shortcut floor (retino.evaluation.shortcut). Its summary (summary.json beside the data, and
the metrics of the audit's MLflow run) is what runs on that data quote. """

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from retino.data.layout import SplitIndex
from retino.data.prepare.preprocess import MAX_MEGAPIXELS
from retino.data.prepare.properties import PROPERTIES
from retino.data.prepare.survey import (
    AUDIT_VERSION,
    Duplicates,
    agreement_ceiling,
    fellow_eye_gaps,
    find_duplicates,
    group_table,
    listed_photographs,
    near_across,
    read_originals,
    survey_reusing,
)
from retino.evaluation.shortcut import ROUNDS, SHORTCUT_NAME, ShortcutFloor, shortcut_floor

# The audit's numbers: its MLflow run's metrics and summary.json's, which runs and study reports
# on the same data quote (audit_quote).
PHOTOGRAPHS, UNREADABLE = "photographs", "unreadable_photographs"
DUPLICATE_GROUPS, GROUPS_ACROSS = "duplicate_groups", "groups_across_splits"
CONFLICTING_GROUPS, NEAR_ACROSS = "conflicting_groups", "near_duplicates_across_splits"
CEILING, FELLOW_EYE_GAPS = "label_agreement_ceiling", "fellow_eye_gaps"
SHORTCUT = "shortcut_"  # + acc, qwk, referable_auc and their _ci_low / _ci_high
MAJORITY_ACC = "majority_acc"
NOT_GRADABLE_SHARE = "not gradable %"  # properties_by_grade's column, where verdicts exist
RESOLUTION_GROUPS = 8  # the most common resolutions shown per grade


@dataclass(frozen=True)
class DataAudit:
    table: pd.DataFrame  # the survey: one row per listed photograph
    duplicates: Duplicates
    groups: pd.DataFrame  # group_table: one row per photograph in a group of one photograph
    fellow_eyes: pd.DataFrame  # fellow_eye_gaps
    ceiling: float  # agreement_ceiling
    floor: ShortcutFloor | None  # None: too few patients or grades to cross-validate

    @property
    def unreadable(self) -> pd.DataFrame:
        return self.table.loc[self.table["problem"] != "", ["split", "name", "problem"]]

    def group_counts(self) -> dict[str, int]:
        """Groups of one photograph: all, those crossing splits, those with conflicting grades;
        near-duplicate pairs (alike, not one photograph) across splits."""
        by_group = self.groups.groupby("group").first()
        return {DUPLICATE_GROUPS: len(by_group),
                GROUPS_ACROSS: int(by_group["crosses_splits"].sum()),
                CONFLICTING_GROUPS: int(by_group["conflicting_grades"].sum()),
                NEAR_ACROSS: near_across(self.table, self.duplicates)}

    def metrics(self) -> dict[str, float]:
        """The audit's numbers as MLflow metrics (and summary.json's); a score the floor
        could not define (one grade's side empty) is left out."""
        numbers: dict[str, float] = {PHOTOGRAPHS: len(self.table),
                                     UNREADABLE: len(self.unreadable), **self.group_counts(),
                                     CEILING: self.ceiling, FELLOW_EYE_GAPS: len(self.fellow_eyes)}
        if self.floor is not None:
            numbers |= {f"{SHORTCUT}{key}": value for key, value in self.floor.scores.items()
                        if np.isfinite(value)}
            numbers[MAJORITY_ACC] = self.floor.majority_acc
        return numbers

    def summary(self, digest: str, root: str) -> dict:
        """What summary.json holds: which data, by which audit, the metrics, the floor's
        sentence and importances."""
        return {"data_digest": digest, "root": root, "audit_version": AUDIT_VERSION,
                "metrics": self.metrics(),
                "shortcut_sentence": self.floor.sentence() if self.floor else "",
                "shortcut_importances": dict(self.floor.importances) if self.floor else {}}


def audit_index(index: dict[str, SplitIndex], root: Path, earlier: Path, workers: int = 1,
                seed: int = 0, max_megapixels: float = MAX_MEGAPIXELS,
                rounds: int = ROUNDS) -> DataAudit:
    """Survey every photograph of the splits (reusing an earlier survey's rows of unchanged
    files; a prepared cache's originals give the file properties) and draw the audit's
    findings from it."""
    table = survey_reusing(listed_photographs(index), earlier, workers, max_megapixels,
                           read_originals(root))
    duplicates = find_duplicates(table, max_megapixels)
    floor = shortcut_floor(table.loc[table["problem"] == ""], list(PROPERTIES), seed,
                           rounds=rounds)
    return DataAudit(table, duplicates, group_table(table, duplicates), fellow_eye_gaps(table),
                     agreement_ceiling(table, duplicates), floor)


def properties_by_grade(table: pd.DataFrame) -> pd.DataFrame:
    """The median of each property per split and grade, with the photographs counted and,
    where the data has the quality check's verdicts, the share it calls not gradable (%)."""
    readable = table.loc[table["problem"] == ""]
    by = readable.groupby(["split", "grade"])
    medians = by[list(PROPERTIES)].median()
    medians.insert(0, "photographs", by.size())
    judged = readable["not_gradable"].notna()
    if judged.any():
        flagged = readable.loc[judged, "not_gradable"].astype(str) != ""
        medians[NOT_GRADABLE_SHARE] = (100 * flagged.groupby([readable["split"], readable["grade"]])
                                     .mean()).round(1)
    return medians.reset_index()


def resolutions_by_grade(table: pd.DataFrame,
                         shown: int = RESOLUTION_GROUPS) -> pd.DataFrame:
    """The most common resolutions (width x height) with their photographs per grade and
    the share of grade 0 among them: a camera that carries a grade shows here."""
    readable = table.loc[table["problem"] == ""]
    resolution = (readable["width"].astype(int).astype(str) + " x "
                  + readable["height"].astype(int).astype(str))
    counts = pd.crosstab(resolution, readable["grade"]).rename_axis(index="resolution",
                                                                    columns=None)
    counts = counts.loc[counts.sum(axis=1).sort_values(ascending=False).index[:shown]]
    counts.columns = [f"grade {grade}" for grade in counts.columns]
    counts["share of grade 0"] = (counts.get("grade 0", 0) / counts.sum(axis=1)).round(3)
    return counts.reset_index()


def audit_quote(metrics: Mapping[str, float]) -> str:
    """What a run's or a study's report says of its data's audit, from the audit's numbers:
    the score without the retina beside the majority baseline, and the copies."""
    def number(key: str, digits: int) -> str:
        value = metrics.get(key, np.nan)
        return f"{value:.{digits}f}" if np.isfinite(value) else "undefined"

    def scored(name: str, key: str, digits: int) -> str:
        low, high = (number(f"{SHORTCUT}{key}_ci_{end}", digits) for end in ("low", "high"))
        return f"{name} {number(SHORTCUT + key, digits)} [{low}, {high}]"
    floor = (f"{SHORTCUT_NAME} scores {scored('kappa', 'qwk', 2)} and "
             f"{scored('referable AUC', 'referable_auc', 3)}, the majority baseline kappa 0.00 at "
             f"accuracy {number(MAJORITY_ACC, 3)}" if f"{SHORTCUT}qwk" in metrics
             else "too few patients for the score without the retina")
    return (f"{floor}; {number(GROUPS_ACROSS, 0)} group(s) of copies across splits, "
            f"{number(CONFLICTING_GROUPS, 0)} with conflicting grades (label-agreement ceiling "
            f"{number(CEILING, 3)})")
