"""Public DR datasets besides Kaggle/EyePACS, read as they are downloaded:

- APTOS 2019 Blindness Detection: train.csv (id_code, diagnosis) and train_images/<id>.png;
- Messidor-2 with its adjudicated grades: a CSV (image_id, adjudicated_dr_grade, adjudicated_dme,
  adjudicated_gradable) and its image folder; ungradable images are excluded and reported;
- IDRiD disease grading: its label CSVs (Image name, Retinopathy grade, ...), whose training and
  testing files give the set's own split, and the .jpg images.

Each reader gives (name, grade, file) rows, the rows it could not use with the reason, and the
set's own split where it has one. Images are found by file name anywhere under the folder.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from retino.core.errors import DataError
from retino.core.grades import parse_grade
from retino.core.registry import Registry
from retino.data.layout import csv_rows
from retino.data.split import unsafe_name_reason

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".tif", ".tiff", ".bmp"}


@dataclass
class Labelled:
    rows: list[tuple[str, int, Path]] = field(default_factory=list)  # name, grade, file
    rejected: list[tuple[str, str]] = field(default_factory=list)  # name, reason
    official: dict[str, str] | None = None  # name -> "train" | "test": the set's own split
    names: set[str] = field(default_factory=set)  # of rows, to find repeats
    rejected_in: dict[str, str] = field(default_factory=dict)  # name -> split, where known
    patients: dict[str, str] = field(default_factory=dict)  # name -> patient, where known
    patients_from: str = ""  # the file they were read from


def csv_header(path: Path) -> set[str]:
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as f:
            return {cell.strip().lower() for cell in next(csv.reader(f), [])}
    except (UnicodeDecodeError, csv.Error, OSError):
        return set()


def image_files(folder: Path) -> dict[str, list[Path]]:
    """Every image file under folder, by lower-case name and by lower-case stem (a name may
    occur in several subfolders: IDRiD numbers its training and testing images alike)."""
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            for key in {path.name.lower(), path.stem.lower()}:
                found.setdefault(key, []).append(path)
    return found


def _find(files: dict[str, list[Path]], image: str, root: Path, within: str = "") -> Path | None:
    """The file called image (with or without its suffix), in a folder whose path under root
    holds `within` where several match."""
    candidates = files.get(image.lower()) or files.get(Path(image).stem.lower()) or []
    preferred = [p for p in candidates if within in str(p.parent.relative_to(root)).lower()]
    return (preferred or candidates or [None])[0]


def _add(out: Labelled, name: str, grade_text: str, path: Path | None,
         split: str | None = None) -> None:
    """One labelled row, or its reason for being left out."""
    grade = parse_grade(grade_text)
    reason = unsafe_name_reason(name)
    if reason is None and grade is None:
        reason = f"label {grade_text!r} is not a grade 0-4"
    if reason is None and path is None:
        reason = "file not found: no image of that name under the folder"
    if reason is None and name in out.names:
        reason = "listed more than once (the first row is used)"
    if reason:
        out.rejected.append((name, reason))
        if split is not None:  # the set's own split holds it, usable or not
            out.rejected_in[name] = split
        return
    out.rows.append((name, grade, path))
    out.names.add(name)
    if split is not None:
        if out.official is None:
            out.official = {}
        out.official[name] = split


def _stem(image: str) -> str:
    return Path(image).stem if Path(image).suffix.lower() in IMAGE_SUFFIXES else image


def read_aptos(source: Path) -> Labelled:
    out, files = Labelled(), image_files(source)
    for row in csv_rows(source / "train.csv"):
        image = row.get("id_code", "")
        _add(out, image, row.get("diagnosis", ""), _find(files, image, source, "train"))
    return out


def read_messidor2(source: Path, labels: Path) -> Labelled:
    out, files = Labelled(), image_files(source)
    for row in csv_rows(labels):
        image = row.get("image_id", "")
        if row.get("adjudicated_gradable", "1") not in ("1", "1.0"):
            out.rejected.append((_stem(image), "ungradable (adjudicated_gradable = 0): "
                                                   "no adjudicated grade"))
            continue
        _add(out, _stem(image), row.get("adjudicated_dr_grade", ""), _find(files, image, source))
    if exams := find_exam_list(source, out.names, labels):
        out.patients, out.patients_from = read_exam_list(exams, out.names), str(exams)
    return out


def _csv_cells(path: Path) -> list[list[str]]:
    """Every row of a CSV as stripped cells, with its delimiter (',', ';' or tab) sniffed."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (UnicodeDecodeError, OSError):
        return []
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    return [[cell.strip() for cell in row] for row in csv.reader(text.splitlines(), dialect)]


def read_exam_list(path: Path, names: set[str]) -> dict[str, str]:
    """name -> patient from a file saying whose eye each image is: either the columns
    image,patient, or one row per examination naming its images (Messidor-2's pair list: both
    eyes of one person), whatever its other cells and delimiter. Names are matched without
    their suffix, ignoring case; a row naming none of them is skipped (a header)."""
    rows = _csv_cells(path)
    header = [cell.lower() for cell in rows[0]] if rows else []
    by_key = {name.lower(): name for name in names}
    if {"image", "patient"} <= set(header):
        image, patient = header.index("image"), header.index("patient")
        return {by_key[_stem(row[image]).lower()]: row[patient] for row in rows[1:]
                if len(row) > max(image, patient) and _stem(row[image]).lower() in by_key
                and row[patient]}
    patients = {}
    for number, row in enumerate(rows, start=1):
        for name in (by_key.get(_stem(cell).lower()) for cell in row):
            if name is not None:
                patients[name] = f"exam{number}"
    return patients


def find_exam_list(source: Path, names: set[str], labels: Path) -> Path | None:
    """A CSV under source, besides the labels, whose rows mostly name two or more of the set's
    images: an examination list (Messidor-2 ships one with its images)."""
    by_key = {name.lower() for name in names}
    for path in sorted(source.rglob("*.csv")):
        if path == labels:
            continue
        rows = [[cell for cell in row if _stem(cell).lower() in by_key]
                for row in _csv_cells(path)]
        naming = [row for row in rows if row]
        if naming and sum(len(row) >= 2 for row in naming) >= len(naming) / 2:
            return path
    return None


def read_idrid(source: Path, label_files: list[Path]) -> Labelled:
    """Its training and testing label files make its own split (a file named neither is
    training). Both sets number their images from IDRiD_001, so a testing image's name in the
    cache is test-<its name>, and it is looked for in a folder named for testing."""
    out, files = Labelled(), image_files(source)
    for labels in label_files:
        split = "test" if "test" in labels.name.lower() else "train"
        for row in csv_rows(labels):
            image = row.get("image name", "")
            name = f"test-{_stem(image)}" if split == "test" else _stem(image)
            _add(out, name, row.get("retinopathy grade", ""), _find(files, image, source, split),
                 split)
    return out


def find_csvs(source: Path, columns: set[str]) -> list[Path]:
    """CSV files under source (two levels at most: the sets' own layouts) with these columns."""
    candidates = [*source.glob("*.csv"), *source.glob("*/*.csv"), *source.glob("*/*/*.csv")]
    return sorted(p for p in candidates if columns <= csv_header(p))


APTOS_COLUMNS = {"id_code", "diagnosis"}
MESSIDOR2_COLUMNS = {"image_id", "adjudicated_dr_grade", "adjudicated_gradable"}
IDRID_COLUMNS = {"image name", "retinopathy grade"}


@dataclass(frozen=True)
class PublicSet:
    """How a public set is recognised in a folder (prepare's --format auto), and read from it."""
    found_in: Callable[[Path], bool]
    read: Callable[[Path], Labelled]


# prepare's --format -> the set; detection tries them in this order
PUBLIC_SETS: Registry[PublicSet] = Registry("public set (--format)")


def _label_files(source: Path, columns: set[str], fmt: str) -> list[Path]:
    found = find_csvs(source, columns)
    if not found:
        raise DataError(f"No CSV under {source} has the columns {', '.join(sorted(columns))} "
                        f"({fmt}'s label file).")
    return found


def _read_aptos_folder(source: Path) -> Labelled:
    if not (source / "train.csv").is_file():
        raise DataError(f"{source} has no train.csv: APTOS 2019 keeps its labels there "
                        "(id_code,diagnosis), with the images in train_images/.")
    return read_aptos(source)


PUBLIC_SETS.add("aptos", PublicSet(lambda source: APTOS_COLUMNS <= csv_header(source / "train.csv"),
                                   _read_aptos_folder))
PUBLIC_SETS.add("messidor2", PublicSet(
    lambda source: bool(find_csvs(source, MESSIDOR2_COLUMNS)),
    lambda source: read_messidor2(source, _label_files(source, MESSIDOR2_COLUMNS,
                                                       "messidor2")[0])))
PUBLIC_SETS.add("idrid", PublicSet(
    lambda source: bool(find_csvs(source, IDRID_COLUMNS)),
    lambda source: read_idrid(source, _label_files(source, IDRID_COLUMNS, "idrid"))))


def detect_public_set(source: Path) -> str | None:
    """The name of the public set whose files are in source, or None."""
    return next((name for name in PUBLIC_SETS if PUBLIC_SETS[name].found_in(source)), None)


def read_public_set(source: Path, fmt: str) -> Labelled:
    return PUBLIC_SETS[fmt].read(source)
