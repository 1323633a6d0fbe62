"""Where the images to prepare come from, and which split each goes to, with every unusable row
kept for the report. Formats (auto-detected from the folder, or named with --format):

- kaggle: Kaggle/EyePACS's trainLabels.csv and train/ (split here, by patient);
- lab: the lab's four CSVs and images/ (their split, used as it is);
- aptos, messidor2, idrid: the public sets of retino/data/prepare/public_sets.py.

Split modes: patient (stratified by grade; by image where names carry no patient; a set's own
split where it has one, and one made here where it holds training images only) or none (every
image a test image: a set for external validation).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from retino.core.errors import DataError
from retino.core.grades import parse_grade
from retino.data.layout import IMAGE_SUFFIX, SPLITS, csv_paths, patient_of, read_lines
from retino.data.prepare.public_sets import (
    IMAGE_SUFFIXES,
    PUBLIC_SETS,
    Labelled,
    detect_public_set,
    read_exam_list,
    read_public_set,
)
from retino.data.split import (
    LAB_TEST_FRACTION,
    read_kaggle_labels,
    split_by_patient,
    unsafe_name_reason,
)

SOURCE_FORMATS = ("auto", "kaggle", "lab", *PUBLIC_SETS)  # prepare's --format
SPLIT_MODES = ("patient", "none")
log = logging.getLogger(__name__)


@dataclass
class Source:
    format: str
    splits: dict[str, list[tuple[str, int]]]  # split -> (name, grade)
    rejected: list[tuple[str, str, str]]  # (split, name, reason)
    how: str  # how the split was made, for the manifest
    files: dict[str, Path]  # name -> the file to prepare
    image_dirs: list[Path]  # where images no row names are looked for (and reported)
    patients: dict[str, str] = field(default_factory=dict)  # name -> patient, where known
    patients_from: str = ""  # the file that said so


def _read_lab_split(source: Path, split: str) -> tuple[list[tuple[str, int]], list]:
    img_csv, label_csv = csv_paths(source, split)
    names, labels = read_lines(img_csv), read_lines(label_csv)  # line i pairs with line i
    rows, rejected = [], []
    for i in range(max(len(names), len(labels))):
        name = names[i] if i < len(names) else f"<{label_csv.name} line {i + 1}>"
        if i >= len(labels) or i >= len(names):
            rejected.append((split, name, f"{img_csv.name} and {label_csv.name} differ in "
                                          f"length ({len(names)} vs {len(labels)} lines)"))
        elif reason := unsafe_name_reason(name):
            rejected.append((split, name, reason))
        elif parse_grade(labels[i]) is None:
            rejected.append((split, name, f"label {labels[i]!r} is not a grade 0-4"))
        else:
            rows.append((name, parse_grade(labels[i])))
    return rows, rejected


def detect_format(source: Path) -> str:
    if all(p.is_file() for split in SPLITS for p in csv_paths(source, split)):
        return "lab"
    if (source / "trainLabels.csv").is_file():
        return "kaggle"
    found = detect_public_set(source)
    if found is None:
        raise DataError(f"{source} matches no known layout: Kaggle's trainLabels.csv, the lab's "
                        "four CSVs (train_img.csv, train_label.csv, test_img.csv, "
                        "test_label.csv), APTOS 2019's train.csv, a Messidor-2 CSV with "
                        "adjudicated grades, or IDRiD's disease-grading CSVs. Name one with "
                        f"--format ({', '.join(SOURCE_FORMATS[1:])}).")
    return found


def _split(names: list[str], grades: list[int], official: dict[str, str] | None, mode: str,
           seed: int, fmt: str, patients: dict[str, str],
           training_only: bool = False) -> tuple[dict[str, list[tuple[str, int]]], str]:
    rows = list(zip(names, grades, strict=True))
    if mode == "none":
        return {"train": [], "test": rows}, "none: every image is a test image"
    if official is not None and not training_only:
        _warn_of_split_patients(official, patients)
        return ({split: [r for r in rows if official[r[0]] == split] for split in SPLITS},
                "lab CSVs, used as they are" if fmt == "lab"
                else f"{fmt}'s own training and testing split, used as it is")
    whose = [patients.get(n) or patient_of(n) for n in names]
    train, test = split_by_patient(names, grades, seed=seed, patients=whose)
    unit = "patient" if len(set(whose)) < len(names) else \
        "image (the names carry no patient)"
    how = f"by {unit}, seed {seed}"
    if official is not None:  # a set's training images alone (IDRiD's, without its testing set)
        made = (f"{len(test)} of its {len(rows)} images made the test split {how}, stratified "
                "by grade")
        how = f"{fmt} without a test split of its own: {made}"
        log.warning("%s holds no test images of its own: %s (the lab's share, %.0f %%).",
                    fmt, made, 100 * LAB_TEST_FRACTION)
    return ({"train": [rows[i] for i in train], "test": [rows[i] for i in test]}, how)


def _training_only(labelled: Labelled, fmt: str) -> bool:
    """Whether a public set with a split of its own lists training images only (IDRiD's
    training set without its testing set): not when any row, usable or not, is a test row,
    and never for the lab's CSVs, whose test CSVs are theirs to fix."""
    listed = [*(labelled.official or {}).values(), *labelled.rejected_in.values()]
    return fmt != "lab" and labelled.official is not None and "test" not in listed


def _warn_of_split_patients(official: dict[str, str], patients: dict[str, str]) -> None:
    """A set's own split is kept as it is, even where the patients it was given put one
    person's eyes on both sides: said, with the count (the run's leakage check counts them
    too)."""
    sides: dict[str, set[str]] = {}
    for name, split in official.items():
        sides.setdefault(patients.get(name) or patient_of(name), set()).add(split)
    if shared := sum(len(found) > 1 for found in sides.values()):
        log.warning("The set's own train/test split is kept as it is, but %d patient(s) have "
                    "images on both sides of it; runs on it will count them as shared "
                    "patients. Use --split none, or a split by patient, to keep them apart.",
                    shared)


def _lab_or_kaggle(source: Path, fmt: str, image_dir: Path) -> Labelled:
    out = Labelled()
    if fmt == "kaggle":
        labelled = read_kaggle_labels(source / "trainLabels.csv")
        out.rows = [(n, g, image_dir / f"{n}{IMAGE_SUFFIX}")
                    for n, g in zip(labelled.names, labelled.grades, strict=True)]
        out.rejected = labelled.rejected
        return out
    splits, rejected = {}, []
    for split in SPLITS:
        splits[split], bad = _read_lab_split(source, split)
        rejected += bad
    splits = _drop_repeats(splits, rejected)
    out.rows = [(n, g, image_dir / f"{n}{IMAGE_SUFFIX}") for split in SPLITS
                for n, g in splits[split]]
    out.official = {n: split for split in SPLITS for n, _ in splits[split]}
    out.rejected = [(name, reason) for _, name, reason in rejected]
    out.rejected_in = {name: split for split, name, _ in rejected}
    return out


def read_source(source: Path, seed: int, fmt: str = "auto", split: str = "patient",
                image_dir: Path | None = None, patients_file: Path | None = None) -> Source:
    """The images of source in the given (or detected) format, split as asked; whose eye each
    image is from patients_file when given (see read_exam_list), else from the set's own
    examination list (Messidor-2's), else from the names."""
    fmt = detect_format(source) if fmt == "auto" else fmt
    if fmt in ("kaggle", "lab"):
        images = Path(image_dir) if image_dir else default_image_dir(source)
        if not images.is_dir():
            raise DataError(f"Image folder {images} not found: pass --images /path/to/jpegs.")
        labelled, dirs = _lab_or_kaggle(source, fmt, images), [images]
    else:
        labelled = read_public_set(Path(image_dir) if image_dir else source, fmt)
        dirs = sorted({path.parent for _, _, path in labelled.rows})
    names, grades = [r[0] for r in labelled.rows], [r[1] for r in labelled.rows]
    if patients_file is not None:
        if not Path(patients_file).is_file():
            raise DataError(f"--patients {patients_file}: no such file.")
        labelled.patients = read_exam_list(patients_file, set(names))
        labelled.patients_from = str(patients_file)
    splits, how = _split(names, grades, labelled.official, split, seed, fmt, labelled.patients,
                         _training_only(labelled, fmt))
    default = "test" if split == "none" else "train"
    rejected = [(labelled.rejected_in.get(name, default), name, reason)
                for name, reason in labelled.rejected]
    return Source(fmt, splits, rejected, how, {n: p for n, _, p in labelled.rows}, dirs,
                  labelled.patients, labelled.patients_from)


def _drop_repeats(splits: dict[str, list[tuple[str, int]]], rejected: list) -> dict:
    """A name listed twice (in one split, or in both: a test-set leak) keeps its first row."""
    seen: set[str] = set()
    kept: dict[str, list[tuple[str, int]]] = {}
    for split in SPLITS:
        kept[split] = []
        for name, grade in splits[split]:
            if name in seen:
                rejected.append((split, name, "listed more than once (the first row is used)"))
            else:
                seen.add(name)
                kept[split].append((name, grade))
    return kept


def _resolved(path: Path) -> Path | None:
    """The file a path leads to; None for a symbolic link loop (Path.resolve raised)."""
    try:
        return path.resolve(strict=True)
    except (RuntimeError, OSError):
        return None


def unlabelled_images(source: Source) -> list[tuple[str, str]]:
    """Images in the source's folders that no usable row names, and symbolic link loops:
    reported as ignored (a loop used to end prepare with a RuntimeError)."""
    listed = {_resolved(path) for path in source.files.values()} - {None}
    rejected = {name for _, name, _ in source.rejected}
    suffixes = {IMAGE_SUFFIX} if source.format in ("kaggle", "lab") else IMAGE_SUFFIXES
    ignored = []
    for folder in source.image_dirs:
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in suffixes or path.stem in rejected:
                continue
            target = _resolved(path)
            if target is None and path.is_symlink():
                ignored.append((path.stem, "a symbolic link loop, or a link to nothing"))
            elif target is not None and target not in listed:
                ignored.append((path.stem, "no label row for this image"))
    return ignored


def default_image_dir(source: Path) -> Path:
    """Kaggle keeps its images in train/; the lab's layout in images/."""
    return source / "train" if (source / "train").is_dir() else source / "images"
