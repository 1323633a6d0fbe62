"""The data audit: the same photograph under two names found from its pixels (and different
photographs never grouped), the grades copies disagree on, and the score a model reaches from
file and camera properties alone."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from retino.audit import main as audit_main
from retino.core.errors import DataError
from retino.core.names import AUDIT_TAG, COPIES_ACROSS_SPLITS_TAG, DUPLICATES_FILE
from retino.data.layout import write_split_csvs
from retino.data.prepare.demo import draw_fundus
from retino.data.prepare.survey import Listed, find_duplicates, survey
from retino.training.pipeline import train_and_evaluate
from retino.training.tracker import NullTracker
from tests.conftest import TINY, compose_config

IDRID = Path(__file__).parents[1] / "fixtures" / "idrid" / "1. Original Images" / "a. Training Set"


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
    assert len(photos) >= 10  # the committed IDRiD photographs
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


@pytest.mark.slow
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


class TagRecorder(NullTracker):
    def __init__(self) -> None:
        self.tags: dict[str, str] = {}

    def set_tags(self, tags):
        self.tags |= dict(tags)


def test_a_run_refuses_a_test_photograph_it_would_learn_from_under_another_name(tmp_path):
    """The name check passes a copy under another name; the content check names both files,
    and copies_across_splits=allow goes on with the count on the run."""
    root = fundus_folder(tmp_path / "dr", {"train": [k % 5 for k in range(12)],
                                           "test": [0, 1, 2, 3]})
    images = root / "images"
    original = cv2.imread(str(images / "train2_right.jpeg"))
    cv2.imwrite(str(images / "test1_left.jpeg"), cv2.resize(original, (140, 140)),
                [cv2.IMWRITE_JPEG_QUALITY, 70])
    overrides = [*TINY, "data=kaggle", f"data.root={root}", "data.val_fraction=0"]
    with pytest.raises(DataError) as refused:
        train_and_evaluate(compose_config(overrides), tmp_path / "run")
    assert "test photograph test1_left is train photograph train2_right" in str(refused.value)
    assert "copies_across_splits=allow" in str(refused.value)
    tracker = TagRecorder()
    train_and_evaluate(compose_config([*overrides, "copies_across_splits=allow"]),
                       tmp_path / "allowed", tracker)
    assert tracker.tags[COPIES_ACROSS_SPLITS_TAG] == "1"


@pytest.mark.slow(seconds=12)
def test_prepare_drops_copies_keeping_the_training_one_and_audits_the_cache(tmp_path):
    """--duplicates drop leaves the training photograph of a group and lists the test copy as
    a duplicate; the audit then runs on the cache (its file properties those of the
    originals, not of the cache's 64 px re-encodings)."""
    from retino.data.prepare.cache import main as prepare_main

    source = fundus_folder(tmp_path / "source", {"train": [k % 5 for k in range(12)],
                                                 "test": [0, 1, 2, 3]})
    images = source / "images"
    cv2.imwrite(str(images / "test1_left.jpeg"),
                cv2.resize(cv2.imread(str(images / "train2_right.jpeg")), (150, 150)))
    assert prepare_main([str(source), str(tmp_path / "cache"), "--size", "64", "--workers", "1",
                         "--duplicates", "drop"]) == 0
    cache = tmp_path / "cache" / "center_crop-64px"
    report = pd.read_csv(cache / "report.csv")
    assert report.loc[report["action"] == "duplicate", ["split", "name"]].values.tolist() == [
        ["test", "test1_left"]]
    assert "test1_left" not in (cache / "test_img.csv").read_text()
    summary = json.loads((cache / "audit" / "summary.json").read_text())
    assert summary["metrics"]["photographs"] == 15 and summary["metrics"]["duplicate_groups"] == 0
    survey_table = pd.read_csv(cache / "audit" / "survey.csv")
    assert set(survey_table["width"]) == {160}  # the originals', not the cache's 64 px


@pytest.mark.slow
def test_runs_on_audited_data_link_the_audit_and_their_reports_quote_it(tmp_path, tiny_cfg):
    """The run's page and its study's report say what a model scores on the data without the
    retina (from the audit beside the data), and the run is tagged with the audit's run."""
    from retino.core.names import AUDIT_RUN_TAG
    from retino.jobs.lifecycle import JobContext, run_job
    from retino.studies.study_report import write_report
    from retino.tracking.records import read_runs

    demo = [*TINY, f"data.root={tmp_path / 'demo'}", "data.train_size=40"]
    assert audit_main([*demo, "--workers", "1"]) == 0
    summary, = (tmp_path / "demo").glob("demo-*/audit/summary.json")
    found = json.loads(summary.read_text())["metrics"]  # the demo files two photographs twice
    assert (found["duplicate_groups"], found["conflicting_groups"]) == (2, 1)
    run_job(compose_config(demo), JobContext(output_dir=tmp_path / "run"))
    client = MlflowClient()
    experiment = client.get_experiment_by_name("retino").experiment_id
    audit, = client.search_runs([experiment], f"tags.{AUDIT_TAG} != ''")
    trained, = client.search_runs([experiment], f"tags.{AUDIT_RUN_TAG} != ''")
    assert trained.data.tags[AUDIT_RUN_TAG] == audit.info.run_id
    page = (tmp_path / "run" / "report.html").read_text()
    assert "a model that never looks at the retina" in page
    files = write_report(read_runs([trained.info.run_id]), tmp_path / "study", "study")
    assert f"audit run {audit.info.run_id}: a model that never looks at the retina scores" \
        in files[0].read_text()


def test_a_validation_copy_of_a_training_photograph_is_found_and_a_second_audit_reuses(tmp_path):
    """The copy check compares held-out splits with the splits a model learns from (here a
    validation photograph and its training original); an audit run again reuses its survey,
    an unreadable file included, and says the same."""
    from retino.data.layout import SplitIndex
    from retino.data.prepare.survey import copies_between_splits, listed_photographs, survey_reusing

    root = fundus_folder(tmp_path / "dr", {"train": [k % 5 for k in range(8)], "test": [0, 1]})
    images = root / "images"
    cv2.imwrite(str(images / "copy.jpeg"), cv2.imread(str(images / "train1_left.jpeg")),
                [cv2.IMWRITE_JPEG_QUALITY, 60])
    (images / "empty.jpeg").write_bytes(b"")
    index = {"train": SplitIndex("train", sorted(images.glob("train*.jpeg")), [0] * 8),
             "val": SplitIndex("val", [images / "copy.jpeg", images / "empty.jpeg"], [0, 0]),
             "test": SplitIndex("test", sorted(images.glob("test*.jpeg")), [0, 1])}
    first = survey_reusing(listed_photographs(index), tmp_path / "none.csv")
    found = copies_between_splits(first)
    assert found.copies == [("val", "copy", "train", "train1_left")]
    (tmp_path / "survey.csv").write_text(first.to_csv(index=False))
    again = survey_reusing(listed_photographs(index), tmp_path / "survey.csv")
    assert again.attrs["surveyed_now"] == 1  # only the unreadable file is looked at again
    assert again.loc[again["name"] == "empty", "problem"].item() == "empty file (0 bytes)"
    assert copies_between_splits(again).copies == found.copies
