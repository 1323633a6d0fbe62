"""The data audit: the same photograph under two names found from its pixels (and different
photographs never grouped), the grades copies disagree on, and the score a model reaches from
file and camera properties alone."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from retino.audit import main as audit_main
from retino.core.names import AUDIT_TAG, DUPLICATES_FILE
from retino.data.audit import Listed, find_duplicates, survey
from retino.data.demo import draw_fundus
from retino.data.layout import write_split_csvs

IDRID = Path(__file__).parent / "data" / "idrid" / "1. Original Images" / "a. Training Set"


def copies_of(image: np.ndarray) -> dict[str, np.ndarray]:
    """What a re-export does to a photograph: resized, re-encoded, brightened, darkened,
    cropped by 5 % on each side."""
    h, w = image.shape[:2]
    _, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 50])
    return {"resized": cv2.resize(image, (w * 2 // 3, h * 2 // 3), interpolation=cv2.INTER_AREA),
            "reencoded": cv2.imdecode(encoded, cv2.IMREAD_COLOR),
            "brighter": cv2.convertScaleAbs(image, alpha=1.2, beta=8),
            "darker": cv2.convertScaleAbs(image, alpha=0.75),
            "cropped": image[h // 20: h - h // 20, w // 20: w - w // 20]}


def test_copies_are_grouped_with_their_original_and_different_retinas_are_not(tmp_path):
    """Real photographs (IDRiD) and their re-exported copies under other names: each copy is
    found with its original; the ten different photographs, and synthetic fundi drawn alike
    (the two eyes of a patient included), form no group."""
    photos = [Listed("train", path, 0, path.stem) for path in sorted(IDRID.glob("*.jpg"))]
    originals = {photo.path.stem: cv2.imread(str(photo.path)) for photo in photos[:2]}
    for stem, image in originals.items():
        for kind, copy in copies_of(image).items():
            path = tmp_path / f"{stem}_{kind}.png"
            cv2.imwrite(str(path), copy)
            photos.append(Listed("test", path, 0, path.stem))
    rng = np.random.default_rng(0)
    for k in range(12):  # a patient's two eyes: drawn by the same generator, not one photograph
        path = tmp_path / f"fundus_{k // 2}_{'left' if k % 2 else 'right'}.jpeg"
        cv2.imwrite(str(path), draw_fundus(k % 5, 192, rng))
        photos.append(Listed("train", path, k % 5, f"fundus_{k // 2}"))
    table = survey(photos)
    groups = [sorted(table["name"].iloc[group]) for group in find_duplicates(table).groups]
    assert groups == [sorted([stem, *(f"{stem}_{kind}" for kind in copies_of(image))])
                      for stem, image in originals.items()]


def fundus_folder(root: Path, grades: dict[str, list[int]], size=(160, 160),
                  seed: int = 0) -> Path:
    """The lab's layout with synthetic fundus photographs (two eyes a patient), drawn with
    no lesions so that their pixels carry no grade: the grades are labels only."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    for split, labels in grades.items():
        names = [f"{split}{k // 2}_{'left' if k % 2 else 'right'}" for k in range(len(labels))]
        for name in names:
            cv2.imwrite(str(root / "images" / f"{name}.jpeg"),
                        cv2.resize(draw_fundus(0, 160, rng), size))
        write_split_csvs(root, split, names, labels)
    return root


def run_audit(root: Path, out: Path, *more: str) -> dict:
    code = audit_main(["data=kaggle", f"data.root={root}", "data.val_fraction=0",
                       "bootstrap_rounds=100", "--workers", "1", "--out", str(out), *more])
    assert code == 0
    return json.loads((out / "summary.json").read_text())


def test_audit_names_a_test_copy_of_a_training_photograph_and_a_conflicting_pair(tmp_path):
    train, test = [k % 5 for k in range(40)], [k % 5 for k in range(12)]
    train[0], train[3], test[0] = 4, 2, 2  # train0_right 4 vs train1_left 1; train3_left = test0
    root = fundus_folder(tmp_path / "dr", {"train": train, "test": test})
    images = root / "images"
    # the test split's first photograph: a resized, re-encoded copy of train3_left, graded
    # alike; train0_right: a copy of train1_left under another name, graded differently
    original = cv2.imread(str(images / "train3_left.jpeg"))
    cv2.imwrite(str(images / "test0_right.jpeg"), cv2.resize(original, (120, 120)),
                [cv2.IMWRITE_JPEG_QUALITY, 60])
    (images / "train0_right.jpeg").write_bytes((images / "train1_left.jpeg").read_bytes())
    summary = run_audit(root, tmp_path / "audit")
    metrics = summary["metrics"]
    assert metrics["duplicate_groups"] == 2 and metrics["groups_across_splits"] == 1
    assert metrics["conflicting_groups"] == 1
    assert metrics["label_agreement_ceiling"] == 1 - 1 / 52  # one of the pair's grades is wrong
    groups = pd.read_csv(tmp_path / "audit" / DUPLICATES_FILE)
    across = groups.loc[groups["crosses_splits"], "name"]
    assert sorted(across) == ["test0_right", "train3_left"]
    report = (tmp_path / "audit" / "audit.md").read_text()
    assert "test0_right" in report and "train3_left" in report
    runs = MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name("retino").experiment_id])
    assert [run.data.tags[AUDIT_TAG] for run in runs] == [summary["data_digest"]]
    assert runs[0].data.metrics["groups_across_splits"] == 1


def test_a_camera_that_carries_the_grade_raises_the_floor_and_is_named(tmp_path):
    """Grade 0 photographed at one resolution, the others at another: a model of the file's
    properties alone scores far above the majority baseline, and the resolution is what
    carries it. The same photographs with their resolution unrelated to the grade: near 0."""
    grades = [0, 0, 0, 1, 2, 3] * 12
    planted = fundus_folder(tmp_path / "planted", {"train": grades, "test": [0, 2]})
    for name, grade in zip([f"train{k // 2}_{'left' if k % 2 else 'right'}"
                            for k in range(len(grades))], grades, strict=True):
        if grade:  # another camera: 200 x 150
            path = planted / "images" / f"{name}.jpeg"
            cv2.imwrite(str(path), cv2.resize(cv2.imread(str(path)), (200, 150)))
    floor = run_audit(planted, tmp_path / "planted-audit", "--no-mlflow")
    assert floor["metrics"]["shortcut_qwk_ci_low"] > 0.3
    assert set(list(floor["shortcut_importances"])[:2]) & {"width", "height", "aspect"}
    clean = fundus_folder(tmp_path / "clean", {"train": grades, "test": [0, 2]}, seed=2)
    metrics = run_audit(clean, tmp_path / "clean-audit", "--no-mlflow")["metrics"]
    assert metrics["shortcut_qwk_ci_low"] < 0 < metrics["shortcut_qwk_ci_high"] + 0.05
    assert metrics["duplicate_groups"] == 0
