"""The lab's on-disk layout: headerless CSVs of image names and grades, and a folder of JPEGs.

    <root>/train_img.csv    one image name per line (no suffix, no header)
    <root>/train_label.csv  one grade 0-4 per line, same order
    <root>/test_img.csv, <root>/test_label.csv
    <image dir>/<name>.jpeg
    <root>/patients.csv     optional (image,patient): whose eye each image is, for sets whose
                            names do not say (Kaggle's `<patient>_<left|right>` do)
    <root>/report.csv       optional (split,name,action,reason): what preparing it noted,
                            among which the photographs judged not gradable
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from retino.core.errors import DataError
from retino.core.files import atomic_write_text
from retino.core.grades import parse_grade

IMAGE_SUFFIX = ".jpeg"
SPLITS = ("train", "test")
MANIFEST_FILE = "manifest.json"  # a prepared cache's record of how it was made
PATIENTS_FILE = "patients.csv"  # image,patient where the names do not say whose eye it is
REPORT = "report.csv"  # a prepared set's split,name,action,reason of every image it noted
ORIGINALS_FILE = "originals.csv"  # a prepared cache's: each original file's size and format
DUPLICATE = "duplicate"  # report.csv's action for one left out as a copy (--duplicates drop)
NOT_GRADABLE = "not gradable"  # report.csv's action for a photograph kept but marked
_SHOW_AT_MOST = 5  # how many offending names an error message lists


def csv_rows(path: Path) -> list[dict[str, str]]:
    """A label CSV with a header (Kaggle's, the public sets'): its rows with lower-case,
    stripped column names and stripped values (a byte-order mark is fine)."""
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path} is not a UTF-8 CSV file ({err}).") from err
    return [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            for row in rows]


def patient_of(name: str) -> str:
    """'10_left' -> '10'; a name without an eye suffix is its own patient."""
    stem, _, eye = name.rpartition("_")
    return stem if stem and eye in {"left", "right"} else name


@dataclass(frozen=True)
class SplitIndex:
    """The images of one split: their paths, grades and patients, in CSV order (patients from
    the root's patients.csv, else read from the names: patient_of)."""

    split: str
    paths: list[Path]
    grades: list[int]
    patients: list[str] = field(default_factory=list)
    # why each photograph is not gradable ("" when it is); None: quality was not assessed
    not_gradable: list[str] | None = None

    def __post_init__(self) -> None:
        if not self.patients:
            self.patients.extend(patient_of(path.stem) for path in self.paths)

    def __len__(self) -> int:
        return len(self.paths)


def csv_paths(root: Path, split: str) -> tuple[Path, Path]:
    return Path(root) / f"{split}_img.csv", Path(root) / f"{split}_label.csv"


def write_split_csvs(root: Path, split: str, names: list[str], grades: list[int]) -> None:
    """Write the two headerless CSVs of a split (atomically)."""
    img_csv, label_csv = csv_paths(root, split)
    atomic_write_text(img_csv, "".join(f"{n}\n" for n in names))
    atomic_write_text(label_csv, "".join(f"{g}\n" for g in grades))


def write_patients_csv(root: Path, patients: dict[str, str]) -> None:
    """patients.csv (image,patient), sorted; nothing when every name says its own patient."""
    path = Path(root) / PATIENTS_FILE
    if all(patient == patient_of(name) for name, patient in patients.items()):
        path.unlink(missing_ok=True)
        return
    rows = "".join(f"{name},{patient}\n" for name, patient in sorted(patients.items()))
    atomic_write_text(path, "image,patient\n" + rows)


def read_patients(root: Path) -> dict[str, str]:
    """image -> patient from the root's patients.csv; {} where there is none."""
    path = Path(root) / PATIENTS_FILE
    if not path.is_file():
        return {}
    rows = csv_rows(path)
    if rows and not {"image", "patient"} <= rows[0].keys():
        raise DataError(f"{path} must have the columns image,patient; found {', '.join(rows[0])}.")
    return {row["image"]: row["patient"] for row in rows if row["image"] and row["patient"]}


def read_quality_marks(root: Path) -> dict[str, str] | None:
    """name -> why it is not gradable, from the root's report.csv; None when the set's quality
    was never assessed (no report, or a manifest saying quality off or nothing about it)."""
    report = Path(root) / REPORT
    manifest = read_manifest(root)
    assessed = manifest.get("quality", {}).get("mode", "off") != "off" if manifest else \
        report.is_file()
    if not assessed or not report.is_file():
        return None
    return {row["name"]: row["reason"] for row in csv_rows(report)
            if row.get("action") == NOT_GRADABLE}


def read_manifest(root: Path) -> dict:
    """A prepared cache's manifest.json ({} where there is none, as for the demo set)."""
    path = Path(root) / MANIFEST_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON ({err}); re-run the preparation command to "
                        "rewrite it.") from err


def read_lines(path: Path) -> list[str]:
    """One stripped value per line, in file order. Blank lines inside the file are kept (as ''),
    so that image i and label i still pair up; a byte-order mark and Windows line ends are fine.
    """
    lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    while lines and not lines[-1]:
        lines.pop()  # a trailing newline or two is not a row
    return lines


def _read_column(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path} not found. data=kaggle expects train_img.csv, train_label.csv, "
                        f"test_img.csv and test_label.csv in data.root ({path.parent}).")
    return read_lines(path)


def _parse_grades(values: list[str], label_csv: Path) -> list[int]:
    bad = [(i + 1, v) for i, v in enumerate(values) if parse_grade(v) is None]
    if bad:
        shown = ", ".join(f"line {line}: {v!r}" for line, v in bad[:_SHOW_AT_MOST])
        raise DataError(f"{label_csv}: {len(bad)} label(s) outside the grades 0-4 ({shown}). "
                        "Each line must hold one integer grade from 0 (no DR) to 4 "
                        "(proliferative).")
    return [parse_grade(v) for v in values]


def _check_files_exist(paths: list[Path], image_dir: Path, split: str) -> None:
    missing = [p for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(p.name for p in missing[:_SHOW_AT_MOST])
        raise DataError(f"{len(missing)} of {len(paths)} {split} images are missing from "
                        f"{image_dir} (first: {shown}). Check data.image_dir, or prepare the "
                        f"images so that each name in {split}_img.csv has a file "
                        f"<name>{IMAGE_SUFFIX}.")


def _check_no_conflicting_duplicates(names: list[str], grades: list[int], img_csv: Path) -> None:
    """DataError when one image is listed twice with different grades (prepare refuses it too):
    a model trained on it learns both, and a report counts it twice."""
    seen: dict[str, int] = {}
    conflicts = []
    for name, grade in zip(names, grades, strict=True):
        if seen.setdefault(name, grade) != grade and name not in conflicts:
            conflicts.append(name)
    if conflicts:
        shown = ", ".join(f"{name} ({seen[name]} and another)" for name in
                          conflicts[:_SHOW_AT_MOST])
        raise DataError(f"{img_csv} lists {len(conflicts)} image(s) twice with different grades: "
                        f"{shown}. Keep one line per image with its agreed grade.")


def read_split_index(root: Path, image_dir: Path, split: str) -> SplitIndex:
    """Read and validate one split; any problem raises DataError naming the file and the fix."""
    img_csv, label_csv = csv_paths(root, split)
    names, labels = _read_column(img_csv), _read_column(label_csv)
    if len(names) != len(labels):
        raise DataError(f"{img_csv.name} lists {len(names)} images but {label_csv.name} has "
                        f"{len(labels)} labels; the two files must have one line per image.")
    if not names:
        raise DataError(f"The {split} split in {root} is empty: {img_csv.name} lists no images.")
    blank = [i + 1 for i, name in enumerate(names) if not name]
    if blank:
        raise DataError(f"{img_csv}: line(s) {blank[:_SHOW_AT_MOST]} are blank; every line must "
                        "name one image (a blank line would shift every label after it).")
    grades = _parse_grades(labels, label_csv)
    _check_no_conflicting_duplicates(names, grades, img_csv)
    paths = [Path(image_dir) / f"{name}{IMAGE_SUFFIX}" for name in names]
    _check_files_exist(paths, Path(image_dir), split)
    known, marks = read_patients(root), read_quality_marks(root)
    return SplitIndex(split, paths, grades, [known.get(name) or patient_of(name) for name in names],
                      None if marks is None else [marks.get(name, "") for name in names])
