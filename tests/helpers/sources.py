"""Synthetic data folders: the lab's layout, Kaggle sources, a clinic's photographs, CIFAR-10."""

import csv
import pickle
import shutil
from pathlib import Path

import cv2
import numpy as np

from retino.data.layout import write_split_csvs
from retino.data.prepare.demo import draw_fundus
from retino.training.cifar10 import FOLDER

BGR_RED = (0, 0, 255)  # OpenCV order: pure red
SIZE = 48  # output side of the tiny caches


def make_kaggle_folder(root: Path, n_train: int = 6, n_test: int = 4) -> Path:
    """The lab's layout with tiny solid-red JPEGs: four headerless CSVs and images/<name>.jpeg."""
    (root / "images").mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test)):
        names = [f"{i}_{'left' if i % 2 else 'right'}_{split}" for i in range(n)]
        for name in names:
            cv2.imwrite(str(root / "images" / f"{name}.jpeg"), np.full((40, 40, 3), BGR_RED,
                                                                       np.uint8))
        write_split_csvs(root, split, names, [i % 5 for i in range(n)])
    return root


def kaggle_frame(grade: int, rng, width=200, height=150) -> np.ndarray:
    """A synthetic fundus on a wider black frame, like Kaggle's photographs (BGR)."""
    frame = np.zeros((height, width, 3), np.uint8)
    left = (width - height) // 2
    frame[:, left : left + height] = draw_fundus(grade, height, rng)
    return frame


def make_kaggle_source(root: Path, patients: int = 10, seed: int = 0) -> Path:
    """trainLabels.csv (header image,level) and train/<patient>_<eye>.jpeg."""
    rng = np.random.default_rng(seed)
    (root / "train").mkdir(parents=True)
    rows = []
    for patient in range(patients):
        for eye in ("left", "right"):
            grade = int(rng.integers(0, 5))
            cv2.imwrite(str(root / "train" / f"{patient}_{eye}.jpeg"), kaggle_frame(grade, rng))
            rows.append((f"{patient}_{eye}", grade))
    write_labels(root, rows)
    return root


def write_labels(root: Path, rows) -> None:
    with (root / "trainLabels.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("image", "level"), *rows])


def add_ungradable_photographs(root: Path) -> list[str]:
    """A blank white frame and a photograph too dark to read, listed with the rest."""
    dark = (cv2.imread(str(root / "train" / "0_left.jpeg")) * 0.08).astype(np.uint8)
    cv2.imwrite(str(root / "train" / "97_left.jpeg"), np.full((150, 200, 3), 255, np.uint8))
    cv2.imwrite(str(root / "train" / "97_right.jpeg"), dark)
    with (root / "trainLabels.csv").open("a", newline="") as f:
        csv.writer(f).writerows([("97_left", 0), ("97_right", 0)])
    return ["97_left", "97_right"]


def clinic_folder(tmp_path, source, test_names):
    """The run's test photographs as a clinic would have them (raw, camera-sized), and two
    files that are not photographs."""
    clinic = tmp_path / "clinic"
    clinic.mkdir()
    for name in test_names:
        shutil.copy(source / "train" / f"{name}.jpeg", clinic / f"{name}.jpeg")
    (clinic / "notes.txt").write_text("not a photograph\n")
    good = (source / "train" / f"{test_names[0]}.jpeg").read_bytes()
    (clinic / "zz_truncated.jpeg").write_bytes(good[: len(good) // 3])
    cv2.imwrite(str(clinic / "zz_dark.jpeg"), (cv2.imread(str(source / "train" / f"{test_names[0]}"
                                                                ".jpeg")) * 0.1).astype(np.uint8))
    return clinic


def write_cifar10(root, per_batch=8):
    """cifar-10-batches-py/ with pickled data_batch_1..5, test_batch and batches.meta: dicts with
    bytes keys, data (N, 3072) uint8 in channel-major order, labels a list of ints."""
    folder = root / FOLDER
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"img{i}.png".encode() for i in range(per_batch)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"label_names": [n.encode() for n in ("airplane", "automobile", "bird", "cat",
            "deer", "dog", "frog", "horse", "ship", "truck")], b"num_cases_per_batch": per_batch}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return root
