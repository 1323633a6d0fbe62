"""Leakage between splits, checked when a run loads its data: an image in a training split and in
the test split is refused, naming it; test patients with an eye in training are counted, warned
about and kept on the run, and the study report lists them."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from retino.core.errors import DataError
from retino.data.layout import SplitIndex, write_split_csvs
from retino.data.split import shared_patients
from retino.studies.study_report import leakage_lines
from retino.tracking.records import RunRecord
from retino.training.pipeline import record_shared_patients, train_and_evaluate
from retino.training.tracker import NullTracker
from tests.conftest import compose_config
from tests.helpers.sources import make_kaggle_folder


def split(name: str, *stems: str) -> SplitIndex:
    return SplitIndex(name, [Path(f"/images/{stem}.jpeg") for stem in stems], [0] * len(stems))


def test_fellow_eyes_across_train_and_test_are_counted():
    index = {"train": split("train", "10_left", "11_left", "12_left"),
             "val": split("val", "13_left"),
             "test": split("test", "10_right", "13_right", "14_left", "14_right")}
    assert shared_patients(index) == 2  # patient 10 (train) and 13 (validation)
    apart = {"train": split("train", "10_left", "10_right"), "test": split("test", "11_left")}
    assert shared_patients(apart) == 0


def test_an_image_in_train_and_test_is_refused_naming_it():
    index = {"train": split("train", "10_left", "11_left"), "test": split("test", "11_left")}
    with pytest.raises(DataError, match="1 image.*train and the test split.*11_left"):
        shared_patients(index)


def test_a_run_refuses_a_leaked_image_before_any_model_is_built(tmp_path):
    root = make_kaggle_folder(tmp_path / "dr")
    names = [f"{i}_{'left' if i % 2 else 'right'}_train" for i in range(6)]
    write_split_csvs(root, "test", names[:2], [0, 1])  # two training images, listed as test too
    cfg = compose_config(["data=kaggle", f"data.root={root}", "data.val_fraction=0",
                          "resolution=64px", "epochs=1", "batch_size=2"])
    with pytest.raises(DataError, match="2 image.*0_right_train"):
        train_and_evaluate(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "last.pt").exists()


class Tags(NullTracker):
    def __init__(self):
        self.tags = {}

    def set_tags(self, tags):
        self.tags.update(tags)


def test_shared_patients_are_warned_about_and_kept_on_the_run(caplog):
    tracker = Tags()
    with caplog.at_level(logging.WARNING):
        record_shared_patients(3, tracker)
    assert tracker.tags == {"shared_patients": "3"}
    assert "3 test patient(s) also have an eye in the training" in caplog.text


def test_the_study_report_lists_runs_whose_test_patients_were_in_training():
    def run(run_id, shared):
        tags = {} if shared is None else {"shared_patients": str(shared)}
        return RunRecord(run_id, f"run-{run_id}", "FINISHED", {}, tags, {}, {}, None)
    text = leakage_lines([run("a", 0), run("b", 7), run("c", None)])
    assert "**Test patients also in training**" in text and "- run-b (b): 7 patient(s)" in text
    assert "run-a" not in text and leakage_lines([run("a", 0)]) == ""
