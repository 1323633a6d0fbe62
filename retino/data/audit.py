"""What a data set holds besides its labels: each photograph surveyed once (its properties and
content fingerprint), the same photograph under two names, and the grades such copies disagree on.

The survey is a table, one row per listed photograph (its split, name, grade, patient, the
PROPERTIES of retino.data.properties, its fingerprint and, for a file that cannot be read, the
reason). From it: groups of one photograph (retino.data.fingerprints), which of them cross
splits (a test photograph the model trained on), which carry conflicting grades, the accuracy
those conflicts cap any grader at, and patients whose two eyes are graded two or more apart.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from retino.data.fingerprints import (
    BITS,
    Pair,
    alike_pairs,
    bits_from_text,
    bits_text,
    fingerprint,
    groups_of,
    normalised_field,
    read_view,
)
from retino.data.layout import SplitIndex
from retino.data.preprocess import MAX_MEGAPIXELS, BadImage, inspect_image
from retino.data.properties import PROPERTIES, photograph_properties

log = logging.getLogger(__name__)

IDENTITY_COLUMNS = ["split", "name", "grade", "patient"]
SURVEY_COLUMNS = [*IDENTITY_COLUMNS, "path", *PROPERTIES, "fingerprint", "problem"]
FELLOW_EYE_GAP = 2  # grades apart, at least, for a patient's eyes to be flagged


@dataclass(frozen=True)
class Listed:
    """A photograph as the splits list it."""

    split: str
    path: Path
    grade: int
    patient: str


def listed_photographs(index: dict[str, SplitIndex]) -> list[Listed]:
    """Every photograph of every split, in split then CSV order."""
    return [Listed(name, path, grade, patient) for name, split in index.items()
            for path, grade, patient in zip(split.paths, split.grades, split.patients,
                                            strict=True)]


def survey_row(photo: Listed, max_megapixels: float = MAX_MEGAPIXELS) -> dict:
    """One photograph's row of the survey (see SURVEY_COLUMNS); a file that cannot be read has
    its reason under problem and no properties."""
    row = {"split": photo.split, "name": photo.path.stem, "grade": photo.grade,
           "patient": photo.patient, "path": str(photo.path), "fingerprint": "", "problem": ""}
    try:
        width, height, _ = inspect_image(photo.path, max_megapixels)
        view = read_view(photo.path, max_megapixels)
    except BadImage as err:
        return row | {"problem": str(err)}
    row |= photograph_properties(photo.path, width, height, view)
    row["fingerprint"] = bits_text(fingerprint(normalised_field(view)))
    return row


def _survey_star(args: tuple[Listed, float]) -> dict:
    return survey_row(*args)


def survey(photos: Sequence[Listed], workers: int = 1,
           max_megapixels: float = MAX_MEGAPIXELS) -> pd.DataFrame:
    """The survey table of the photographs (SURVEY_COLUMNS), in their order; workers
    processes share the decoding."""
    started = time.perf_counter()
    tasks = [(photo, max_megapixels) for photo in photos]
    if workers > 1 and len(tasks) > 64:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            rows = pool.map(_survey_star, tasks, chunksize=32)
    else:
        rows = [_survey_star(task) for task in tasks]
    table = pd.DataFrame(rows, columns=SURVEY_COLUMNS)
    log.info("Surveyed %d photographs in %.1f s.", len(table), time.perf_counter() - started)
    return table


def fingerprints_of(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(rows that have a fingerprint, their bits as an (N, BITS) bool array)."""
    rows = np.flatnonzero(table["fingerprint"].fillna("").astype(str) != "")
    bits = np.array([bits_from_text(table["fingerprint"].iloc[r]) for r in rows], bool)
    return rows, bits.reshape(len(rows), BITS)


def alike(table: pd.DataFrame, max_megapixels: float = MAX_MEGAPIXELS) -> list[Pair]:
    """Pairs of surveyed photographs that look alike (indices are the table's rows), each
    candidate checked on its pixels (the two files decoded again)."""
    rows, bits = fingerprints_of(table)
    paths = table["path"].to_numpy()

    def read_field(k: int):
        return normalised_field(read_view(Path(paths[rows[k]]), max_megapixels))

    return [Pair(int(rows[p.first]), int(rows[p.second]), p.differing_bits, p.similarity)
            for p in alike_pairs(bits, read_field)]


@dataclass(frozen=True)
class Duplicates:
    """What the audit found by content: the pairs alike, and the groups of one photograph
    (lists of survey rows)."""

    pairs: list[Pair]
    groups: list[list[int]]

    def near_pairs(self) -> list[Pair]:
        """Alike, but not one photograph (another capture of the eye, an edited copy)."""
        return [pair for pair in self.pairs if not pair.same_photograph]


def find_duplicates(table: pd.DataFrame,
                    max_megapixels: float = MAX_MEGAPIXELS) -> Duplicates:
    pairs = alike(table, max_megapixels)
    return Duplicates(pairs, groups_of(len(table), pairs))


def group_table(table: pd.DataFrame, duplicates: Duplicates) -> pd.DataFrame:
    """One row per photograph in a group of one photograph: its group (1-based), whether the
    group crosses splits and whether its grades conflict, then the survey's identity."""
    rows = []
    for number, group in enumerate(duplicates.groups, start=1):
        members = table.iloc[group]
        crosses = members["split"].nunique() > 1
        conflicts = members["grade"].nunique() > 1
        for _, member in members.iterrows():
            rows.append({"group": number, "crosses_splits": crosses,
                         "conflicting_grades": conflicts,
                         **{key: member[key] for key in IDENTITY_COLUMNS}})
    return pd.DataFrame(rows, columns=["group", "crosses_splits", "conflicting_grades",
                                       *IDENTITY_COLUMNS])


def agreement_ceiling(table: pd.DataFrame, duplicates: Duplicates) -> float:
    """The largest accuracy any grader can reach on these labels: within a group of one
    photograph, one answer can match only the grades equal to it (the most common)."""
    if table.empty:
        return 1.0
    lost = sum(len(group) - table.iloc[group]["grade"].value_counts().iloc[0]
               for group in duplicates.groups)
    return 1.0 - lost / len(table)


def fellow_eye_gaps(table: pd.DataFrame, gap: int = FELLOW_EYE_GAP) -> pd.DataFrame:
    """Patients whose photographs are graded gap or more apart (a data-quality flag: a
    patient's eyes usually differ by a grade at most): patient, grades, names."""
    rows = []
    for patient, photos in table.groupby("patient", sort=True):
        grades = photos["grade"]
        if len(photos) > 1 and grades.max() - grades.min() >= gap:
            rows.append({"patient": patient, "grades": " ".join(map(str, grades)),
                         "names": " ".join(photos["name"])})
    return pd.DataFrame(rows, columns=["patient", "grades", "names"])


def copies_across(table: pd.DataFrame, duplicates: Duplicates,
                  held_out: str) -> list[tuple[int, int]]:
    """(held-out row, other row) for each photograph of split held_out whose content is also
    in another split (one photograph: a model tested on what it learned from)."""
    found = []
    for pair in duplicates.pairs:
        if not pair.same_photograph:
            continue
        first, second = table["split"].iloc[pair.first], table["split"].iloc[pair.second]
        if first == second or held_out not in (first, second):
            continue
        found.append((pair.first, pair.second) if first == held_out
                     else (pair.second, pair.first))
    return found


def near_across(table: pd.DataFrame, duplicates: Duplicates) -> int:
    """How many near-duplicate pairs (not one photograph) lie in two different splits."""
    splits = table["split"].to_numpy()
    return sum(splits[p.first] != splits[p.second] for p in duplicates.near_pairs())
