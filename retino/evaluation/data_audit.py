"""A data set's audit: what its photographs hold besides their grades, in one object.

From the survey of every listed photograph (retino.data.audit): the groups of one photograph and
which cross splits, the grades they disagree on and the accuracy that caps, patients whose eyes
are graded far apart, the files that cannot be read, the properties per grade and split, and the
shortcut floor (retino.evaluation.shortcut). Its summary (summary.json beside the data, and the
metrics of the audit's MLflow run) is what runs on that data quote.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from retino.data.audit import (
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
from retino.data.layout import SplitIndex
from retino.data.preprocess import MAX_MEGAPIXELS
from retino.data.properties import PROPERTIES
from retino.evaluation.shortcut import ROUNDS, ShortcutFloor, shortcut_floor

AUDIT_VERSION = 1  # bump when what the audit measures changes: summaries of older ones are redone
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
        return {"duplicate_groups": len(by_group),
                "groups_across_splits": int(by_group["crosses_splits"].sum()),
                "conflicting_groups": int(by_group["conflicting_grades"].sum()),
                "near_duplicates_across_splits": near_across(self.table, self.duplicates)}

    def metrics(self) -> dict[str, float]:
        """The audit's numbers as MLflow metrics (and summary.json's)."""
        numbers: dict[str, float] = {"photographs": len(self.table),
                                     "unreadable_photographs": len(self.unreadable),
                                     **self.group_counts(),
                                     "label_agreement_ceiling": self.ceiling,
                                     "fellow_eye_gaps": len(self.fellow_eyes)}
        if self.floor is not None:
            numbers |= {f"shortcut_{key}": value for key, value in self.floor.scores.items()
                        if np.isfinite(value)}
            numbers["majority_acc"] = self.floor.majority_acc
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
    """The median of each property per split and grade, with the photographs counted."""
    readable = table.loc[table["problem"] == ""]
    medians = readable.groupby(["split", "grade"])[list(PROPERTIES)].median()
    medians.insert(0, "photographs", readable.groupby(["split", "grade"]).size())
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
