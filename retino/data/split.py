"""Train/test split of the Kaggle DR labels, the validation split and cross-validation folds: by
patient, stratified by grade, seeded.

Kaggle names images `<patient>_<left|right>`. Both eyes of a patient go to the same side: a
random split of images would put the fellow eye, nearly the same picture, in the test set.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retino.core.errors import DataError
from retino.core.grades import parse_grade
from retino.data.layout import SplitIndex, csv_rows, patient_of

log = logging.getLogger(__name__)
MIN_TRUSTED_VAL = 50  # validation images below which the chosen epoch is mostly noise
# The lab's split of Kaggle's 35,126 labelled images.
LAB_TRAIN, LAB_TEST = 28_100, 7_026
LAB_TEST_FRACTION = LAB_TEST / (LAB_TRAIN + LAB_TEST)


@dataclass
class LabelledImages:
    """Images with their grades, and the rows that could not be used (name, reason)."""

    names: list[str] = field(default_factory=list)
    grades: list[int] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)


def unsafe_name_reason(name: str) -> str | None:
    """Why an image name may not be used as a file name under the output folder, if so."""
    if not name:
        return "empty image name"
    if "/" in name or "\\" in name or ".." in name or name.startswith("."):
        return "unsafe image name (path separator, '..' or leading dot)"
    return None


def _kaggle_rows(path: Path) -> list[dict[str, str]]:
    """Rows of trainLabels.csv with normalised column names; DataError if it is not that file."""
    rows = csv_rows(path)
    if rows and not {"image", "level"} <= rows[0].keys():
        raise DataError(f"{path} must have the columns image,level (Kaggle's trainLabels.csv); "
                        f"found {', '.join(rows[0])}.")
    return rows


def read_kaggle_labels(path: Path) -> LabelledImages:
    """Read Kaggle's trainLabels.csv (header `image,level`); bad rows are rejected, not fatal:
    unsafe names, labels that are not 0-4, and repeats of a name (the first one is kept)."""
    out = LabelledImages()
    seen: set[str] = set()
    for row in _kaggle_rows(path):
        name, level = row["image"], row["level"]
        reason = unsafe_name_reason(name)
        if reason is None and parse_grade(level) is None:
            reason = f"label {level!r} is not a grade 0-4"
        if reason is None and name in seen:
            reason = "listed more than once (the first row is used)"
        if reason:
            out.rejected.append((name, reason))
        else:
            seen.add(name)
            out.names.append(name)
            out.grades.append(parse_grade(level))
    return out


def _patients_by_worst_grade(names: list[str], grades: list[int], patients: list[str] | None,
                             ) -> tuple[dict[str, list[int]], dict[int, list[str]]]:
    """(patient -> their image rows, worst-eye grade -> its patients); patients given, else
    read from the names."""
    eyes: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(names):
        eyes[patients[i] if patients else patient_of(name)].append(i)
    by_grade: dict[int, list[str]] = defaultdict(list)
    for patient, idx in eyes.items():
        by_grade[max(grades[i] for i in idx)].append(patient)
    return eyes, by_grade


def split_by_patient(names: list[str], grades: list[int], test_fraction: float = LAB_TEST_FRACTION,
                     seed: int = 0,
                     patients: list[str] | None = None) -> tuple[list[int], list[int]]:
    """Indices of (train, test). Patients (given, else read from the names) are stratified by
    their worst eye's grade; within each grade the shuffled patients fill the test side until it
    holds test_fraction of the images."""
    eyes, by_grade = _patients_by_worst_grade(names, grades, patients)
    rng = np.random.default_rng(seed)
    train: list[int] = []
    test: list[int] = []
    for grade in sorted(by_grade):
        patients = sorted(by_grade[grade])
        rng.shuffle(patients)
        target = test_fraction * sum(len(eyes[p]) for p in patients)
        taken = 0
        for patient in patients:
            side = test if taken + len(eyes[patient]) / 2 <= target else train
            taken += len(eyes[patient]) if side is test else 0
            side.extend(eyes[patient])
    if names and (not train or not test):
        raise DataError(f"Splitting {len(names)} images by patient left the "
                        f"{'test' if not test else 'train'} side empty; a split needs more "
                        "patients per grade (or the lab's four CSVs).")
    return sorted(train), sorted(test)


def patient_folds(names: list[str], grades: list[int], folds: int, seed: int = 0,
                  patients: list[str] | None = None) -> list[int]:
    """The cross-validation fold (0..folds-1) of each image. Patients (given, else read from the
    names) stay whole; within each worst-eye grade, the shuffled patients, those with more
    images first, each join the fold holding the fewest images of that grade so far (the
    lowest-numbered on ties), so a grade's images differ between folds by at most one
    patient's images."""
    eyes, by_grade = _patients_by_worst_grade(names, grades, patients)
    rng = np.random.default_rng(seed)
    fold_of = [0] * len(names)
    for grade in sorted(by_grade):
        members = sorted(by_grade[grade])
        rng.shuffle(members)
        members.sort(key=lambda p: -len(eyes[p]))  # stable: shuffled within each size
        held = [0] * folds
        for patient in members:
            fold = held.index(min(held))
            held[fold] += len(eyes[patient])
            for i in eyes[patient]:
                fold_of[i] = fold
    return fold_of


def _carved_fold(train: SplitIndex, folds: int, fold: int, seed: int) -> tuple[list[int], ...]:
    """(training rows, validation rows): fold `fold` of the training split validates."""
    fold_of = patient_folds([p.stem for p in train.paths], train.grades, folds, seed,
                            train.patients)
    val = [i for i, f in enumerate(fold_of) if f == fold]
    if not val or len(val) == len(fold_of):
        raise DataError(f"data.folds={folds} of the {len(train)} training images leaves fold "
                        f"{fold} or the rest empty: use fewer folds or more images.")
    return [i for i, f in enumerate(fold_of) if f != fold], val


def with_validation(index: dict[str, SplitIndex], fraction: float, seed: int,
                    folds: int | None = None, fold: int = 0) -> dict[str, SplitIndex]:
    """train, val and test: the validation split carved from the training split by patient
    (both eyes on one side; by image where names carry no patient), stratified by the
    patient's worst grade, seeded; with folds, fold `fold` of patient_folds is the validation
    split (cross-validation; fraction is then not used). fraction 0 and no folds: no validation
    split (the lab's protocol). The test split never moves."""
    if fraction <= 0 and not folds:
        return dict(index)
    train = index["train"]
    if folds:
        kept, val = _carved_fold(train, folds, fold, seed)
    else:
        kept, val = _fraction_carved(train, fraction, seed)

    def part(name: str, rows: list[int]) -> SplitIndex:
        marks = train.not_gradable
        return SplitIndex(name, [train.paths[i] for i in rows], [train.grades[i] for i in rows],
                          [train.patients[i] for i in rows],
                          None if marks is None else [marks[i] for i in rows])
    carved = {"train": part("train", kept), "val": part("val", val), "test": index["test"]}
    _warn_if_small(carved["val"])
    return carved


def _fraction_carved(train: SplitIndex, fraction: float, seed: int) -> tuple[list[int], ...]:
    try:
        return split_by_patient([p.stem for p in train.paths], train.grades, fraction, seed,
                                train.patients)
    except DataError as err:
        raise DataError(f"data.val_fraction={fraction} of the {len(train)} training images "
                        "leaves the validation or the training split empty: use more images, "
                        "or data.val_fraction=0 (no validation split).") from err


def _warn_if_small(val: SplitIndex) -> None:
    grades = set(val.grades)
    if len(val) < MIN_TRUSTED_VAL or len(grades) < 2:
        log.warning("The validation split holds %d images of grade(s) %s: the epoch it chooses "
                    "is a noisy choice. Use more data, or data.val_fraction=0 (keep the last "
                    "epoch).", len(val), sorted(grades))


def shared_patients(index: dict[str, SplitIndex]) -> int:
    """Test patients who also have an image in the training (or validation) split, counted.

    An image listed in a training split and in the test split is refused, naming it: the model
    would be tested on photographs it learned from. A shared patient (a fellow eye in training)
    is not refused, since the lab's own CSVs may have been split by image, but counted: fellow
    eyes usually share a grade, so the test set then flatters the model."""
    test = index["test"]
    test_names = {path.stem for path in test.paths}
    training = {split: part for split, part in index.items() if split != "test"}
    for split, part in training.items():
        if both := sorted(test_names & {path.stem for path in part.paths}):
            raise DataError(f"{len(both)} image(s) are listed in both the {split} and the test "
                            f"split (first: {', '.join(both[:5])}): the model would be tested on "
                            "photographs it learned from. Remove them from one split's CSVs, or "
                            "prepare the set with python -m retino.data.prepare (it splits by "
                            "patient).")
    trained_on = {patient for part in training.values() for patient in part.patients}
    return len(set(test.patients) & trained_on)
