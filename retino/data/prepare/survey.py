"""What a data set holds besides its labels: each photograph surveyed once (its properties and
content fingerprint), the same photograph under two names, and the grades such copies disagree on.

The survey is a table, one row per listed photograph (its split, name, grade, patient, the
PROPERTIES of retino.data.prepare.properties, its fingerprint and, for a file that cannot be read,
the reason). From it: groups of one photograph (retino.data.prepare.fingerprints), which of them
cross splits (a test photograph the model trained on), which carry conflicting grades, the accuracy
those conflicts cap any grader at, and patients whose two eyes are graded two or more apart.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from retino.core.errors import first_line
from retino.core.names import AUDIT_DIR, AUDIT_SUMMARY_FILE
from retino.data.layout import ORIGINALS_FILE, SplitIndex
from retino.data.prepare.fingerprints import (
    BITS,
    FINGERPRINT_VERSION,
    Pair,
    alike_pairs,
    bits_from_text,
    bits_text,
    candidate_pairs,
    candidate_pairs_between,
    decode_view,
    fingerprint,
    groups_of,
    normalised_field,
    read_view,
)
from retino.data.prepare.preprocess import MAX_MEGAPIXELS, BadImage, inspect_image
from retino.data.prepare.properties import FILE_PROPERTIES, PROPERTIES, photograph_properties

log = logging.getLogger(__name__)

IDENTITY_COLUMNS = ["split", "name", "grade", "patient"]
# path and bytes: the file surveyed (bytes: its size, which tells a later survey it is unchanged)
SURVEY_COLUMNS = [*IDENTITY_COLUMNS, "path", "bytes", *PROPERTIES, "not_gradable", "fingerprint",
                  "fingerprint_version", "problem"]
TEXT_COLUMNS = ["split", "name", "patient", "path", "not_gradable", "fingerprint", "problem"]
FELLOW_EYE_GAP = 2  # grades apart, at least, for a patient's eyes to be flagged
AUDIT_VERSION = 1  # bump when what the audit measures changes: older summaries are not quoted


@dataclass(frozen=True)
class Listed:
    """A photograph as the splits list it."""

    split: str
    path: Path
    grade: int
    patient: str
    not_gradable: str | None = None  # the quality check's reason ("": gradable; None: unjudged)


def listed_photographs(index: dict[str, SplitIndex]) -> list[Listed]:
    """Every photograph of every split, in split then CSV order, with the quality check's
    verdict where the data has one (a prepared cache's report.csv, the demo's)."""
    return [Listed(name, path, grade, patient, None if split.not_gradable is None
                   else split.not_gradable[k])
            for name, split in index.items()
            for k, (path, grade, patient) in enumerate(zip(split.paths, split.grades,
                                                           split.patients, strict=True))]


def survey_row(photo: Listed, max_megapixels: float = MAX_MEGAPIXELS,
               original: dict | None = None) -> dict:
    """One photograph's row of the survey (see SURVEY_COLUMNS); a file that cannot be read has
    its reason under problem and no properties. original: the FILE_PROPERTIES of the file a
    prepared photograph was made from, which stand for its own."""
    row = {"split": photo.split, "name": photo.path.stem, "grade": photo.grade,
           "patient": photo.patient, "path": str(photo.path), "bytes": _size(photo.path),
           "not_gradable": photo.not_gradable, "fingerprint": "", "problem": ""}
    try:
        width, height, _ = inspect_image(photo.path, max_megapixels)
        view = decode_view(photo.path, width, height)  # the header is read once
        row |= photograph_properties(photo.path, width, height, view) | (original or {})
        row["fingerprint"] = bits_text(fingerprint(normalised_field(view)))
    except BadImage as err:
        return row | {"problem": str(err)}
    except Exception as err:  # noqa: BLE001 - one odd file is a row, not the end of a survey
        return row | {"problem": f"cannot be read ({type(err).__name__}: {first_line(err)})"}
    return row | {"fingerprint_version": FINGERPRINT_VERSION}


def _survey_star(args: tuple[Listed, float, dict | None]) -> dict:
    return survey_row(*args)


def read_originals(root: Path) -> dict[str, dict]:
    """name -> the FILE_PROPERTIES of the original a prepared cache's photograph was made
    from ({} for data that was not prepared)."""
    path = Path(root) / ORIGINALS_FILE
    if not path.is_file():
        return {}
    table = pd.read_csv(path, dtype={"name": str})
    return {row["name"]: {key: float(row[key]) for key in FILE_PROPERTIES}
            for row in table.to_dict("records")}


def survey(photos: Sequence[Listed], workers: int = 1,
           max_megapixels: float = MAX_MEGAPIXELS,
           originals: dict[str, dict] | None = None) -> pd.DataFrame:
    """The survey table of the photographs (SURVEY_COLUMNS), in their order; workers
    processes share the decoding; originals (read_originals) stand for prepared files'
    own file properties."""
    started = time.perf_counter()
    originals = originals or {}
    tasks = [(photo, max_megapixels, originals.get(photo.path.stem)) for photo in photos]
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


def alike(table: pd.DataFrame, max_megapixels: float = MAX_MEGAPIXELS,
          between: tuple[np.ndarray, np.ndarray] | None = None) -> list[Pair]:
    """Pairs of surveyed photographs that look alike (indices are the table's rows), each
    candidate checked on its pixels (the two files decoded again); between: two boolean masks
    of the table's rows, to compare only pairs with one photograph in each."""
    rows, bits = fingerprints_of(table)
    paths = table["path"].to_numpy()
    if between is None:
        candidates = ((rows[i], rows[j], d) for i, j, d in candidate_pairs(bits))
    else:
        first, second = (np.flatnonzero(mask[rows]) for mask in between)
        candidates = ((rows[first[i]], rows[second[j]], d) for i, j, d
                      in candidate_pairs_between(bits[first], bits[second]))
    return [Pair(int(p.first), int(p.second), p.differing_bits, p.similarity) for p in
            alike_pairs(candidates, lambda row: normalised_field(read_view(Path(paths[row]),
                                                                           max_megapixels)))]


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


def near_across(table: pd.DataFrame, duplicates: Duplicates) -> int:
    """How many near-duplicate pairs (not one photograph) lie in two different splits."""
    splits = table["split"].to_numpy()
    return sum(splits[p.first] != splits[p.second] for p in duplicates.near_pairs())


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else -1


def read_survey(path: Path) -> pd.DataFrame:
    """A survey.csv as survey() made it (empty when missing or of an older audit's format):
    text columns as text, the rest as numbers, missing values nan."""
    try:
        table = pd.read_csv(path, dtype={column: str for column in TEXT_COLUMNS})
    except (OSError, ValueError):
        return pd.DataFrame(columns=SURVEY_COLUMNS)
    if not set(SURVEY_COLUMNS) <= set(table.columns):
        return pd.DataFrame(columns=SURVEY_COLUMNS)
    table[TEXT_COLUMNS] = table[TEXT_COLUMNS].fillna("")
    return table


def survey_reusing(photos: Sequence[Listed], earlier: Path, workers: int = 1,
                   max_megapixels: float = MAX_MEGAPIXELS,
                   originals: dict[str, dict] | None = None) -> pd.DataFrame:
    """The survey of the photographs, taking an earlier survey's rows (an audit's
    survey.csv) for files of the same path and size, and surveying only the others."""
    known = {(row["path"], int(row["bytes"])): row
             for row in read_survey(earlier).to_dict("records")
             if row["fingerprint"] and row["fingerprint_version"] == FINGERPRINT_VERSION}
    rows: list[dict | None] = []
    for photo in photos:
        row = known.get((str(photo.path), _size(photo.path)))
        rows.append(None if row is None else row | {
            "split": photo.split, "grade": photo.grade, "patient": photo.patient,
            "not_gradable": photo.not_gradable})
    missing = [k for k, row in enumerate(rows) if row is None]
    fresh = survey([photos[k] for k in missing], workers, max_megapixels, originals)
    for k, row in zip(missing, fresh.to_dict("records"), strict=True):
        rows[k] = row
    table = pd.DataFrame(rows, columns=SURVEY_COLUMNS)
    table.attrs["surveyed_now"] = len(missing)  # the rest came from the earlier survey
    return table


HELD_OUT = {"test": ("train", "val"), "val": ("train",)}  # split: the splits it must not share


@dataclass(frozen=True)
class SplitCopies:
    """Photographs of a held-out split (test, or validation) whose content is in a split the
    model learns or chooses from: (held-out split, its name, other split, its name); and how
    many near-duplicate pairs cross such splits."""

    copies: list[tuple[str, str, str, str]]
    near: int


def copies_between_splits(table: pd.DataFrame,
                          max_megapixels: float = MAX_MEGAPIXELS) -> SplitCopies:
    """What the survey of a run's splits shares across them (see HELD_OUT): only the pairs
    of a held-out photograph and a learned one are compared (a fifth of all pairs on Kaggle)."""
    split, name = table["split"].to_numpy(), table["name"].to_numpy()
    copies, near = [], 0
    for held_out, learned in HELD_OUT.items():
        between = (split == held_out, np.isin(split, learned))
        for pair in alike(table, max_megapixels, between):
            a, b = pair.first, pair.second  # a in held_out, b in a learned split
            if pair.same_photograph:
                copies.append((split[a], name[a], split[b], name[b]))
            else:
                near += 1
    return SplitCopies(sorted(copies), near)


def audit_summary(root: Path, digest: str) -> dict | None:
    """The summary of the audit beside the data (<root>/audit/summary.json), when it audited
    this very data (its digest) with this code's audit; None otherwise."""
    path = Path(root) / AUDIT_DIR / AUDIT_SUMMARY_FILE
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    fresh = summary.get("data_digest") == digest and summary.get("audit_version") == AUDIT_VERSION
    return summary if fresh else None
