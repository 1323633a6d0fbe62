"""Where the images to prepare come from: Kaggle's trainLabels.csv (split here, by patient) or
the lab's four CSVs (used as they are), with every unusable row kept for the report."""

from __future__ import annotations

from pathlib import Path

from retino.data.layout import IMAGE_SUFFIX, SPLITS, csv_paths, read_lines
from retino.data.split import read_kaggle_labels, split_by_patient, unsafe_name_reason
from retino.errors import DataError


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
        elif labels[i] not in {"0", "1", "2", "3", "4"}:
            rejected.append((split, name, f"label {labels[i]!r} is not a grade 0-4"))
        else:
            rows.append((name, int(labels[i])))
    return rows, rejected


def read_source(source: Path, seed: int) -> tuple[dict[str, list[tuple[str, int]]], list, str]:
    """Images per split, rejected rows (split, name, reason), and how the split was made."""
    if all(p.is_file() for split in SPLITS for p in csv_paths(source, split)):
        splits, rejected = {}, []
        for split in SPLITS:
            splits[split], bad = _read_lab_split(source, split)
            rejected += bad
        return _drop_repeats(splits, rejected), rejected, "lab CSVs, used as they are"
    labels_csv = source / "trainLabels.csv"
    if not labels_csv.is_file():
        raise DataError(f"{source} has neither trainLabels.csv (Kaggle) nor train_img.csv, "
                        "train_label.csv, test_img.csv, test_label.csv (the lab's layout).")
    labelled = read_kaggle_labels(labels_csv)
    train, test = split_by_patient(labelled.names, labelled.grades, seed=seed)
    pick = lambda idx: [(labelled.names[i], labelled.grades[i]) for i in idx]  # noqa: E731
    rejected = [("train", name, reason) for name, reason in labelled.rejected]
    return {"train": pick(train), "test": pick(test)}, rejected, f"by patient, seed {seed}"


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


def unlabelled_images(image_dir: Path, splits: dict[str, list[tuple[str, int]]],
                rejected: list) -> list[tuple[str, str]]:
    """Images in the folder that no usable CSV row names: reported as ignored, not prepared."""
    listed = {name for rows in splits.values() for name, _ in rows}
    listed |= {name for _, name, _ in rejected}
    return [(path.stem, "no label row for this image")
            for path in sorted(image_dir.glob(f"*{IMAGE_SUFFIX}")) if path.stem not in listed]


def default_image_dir(source: Path) -> Path:
    """Kaggle keeps its images in train/; the lab's layout in images/."""
    return source / "train" if (source / "train").is_dir() else source / "images"
