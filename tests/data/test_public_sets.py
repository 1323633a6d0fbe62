"""APTOS 2019, Messidor-2 and IDRiD prepared from tiny folders in each set's own layout: the
format is detected, ungradable and unusable rows are reported, and the result is the training
layout (`data=kaggle data.root=...` reads it); --split none makes a whole set a test set."""

import csv
import json

import cv2
import numpy as np
import pytest

from retino.data.layout import read_split_index
from retino.data.prepare.cache import cache_dir, main, prepare_cache
from tests.helpers.sources import kaggle_frame

SIZE = 48


def photo(path, grade, rng):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), kaggle_frame(grade, rng))


def write_csv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])


def make_aptos(root, n=12):
    rng = np.random.default_rng(1)
    rows = [(f"{i:04x}a1b2c3", i % 5) for i in range(n)]
    for name, grade in rows:
        photo(root / "train_images" / f"{name}.png", grade, rng)
    photo(root / "test_images" / "ffffunlabelled.png", 0, rng)  # APTOS's unlabelled test set
    rows.append(("0bad0bad0bad", 2))  # listed, but its file is missing
    write_csv(root / "train.csv", ("id_code", "diagnosis"), rows)
    return root


def make_messidor2(root, n=10):
    rng = np.random.default_rng(2)
    rows = []
    for i in range(n):
        image = f"20051020_{43800 + i}_0100_PP.png" if i % 2 else f"IM{i:06d}.JPG"
        photo(root / "IMAGES" / image, i % 5, rng)
        rows.append((image, i % 5, int(i % 3 == 0), 1))
    rows += [("IM999998.JPG", "", "", 0), ("IM999999.JPG", "", "", 0)]  # ungradable
    for image, *_ in rows[-2:]:
        photo(root / "IMAGES" / image, 0, rng)
    write_csv(root / "messidor_data.csv", ("image_id", "adjudicated_dr_grade",
                                           "adjudicated_dme", "adjudicated_gradable"), rows)
    return root


def make_idrid(root, n_train=8, n_test=5):
    rng = np.random.default_rng(3)
    base = root / "B. Disease Grading"
    for split, n, folder, labels in (
            ("train", n_train, "a. Training Set", "a. IDRiD_Disease Grading_Training Labels.csv"),
            ("test", n_test, "b. Testing Set", "b. IDRiD_Disease Grading_Testing Labels.csv")):
        if n == 0:  # the set without this half: no folder, no label file
            continue
        rows = []
        for i in range(1, n + 1):
            # Both sets start at IDRiD_001; the testing image must come from the testing folder.
            grade = (i + (2 if split == "test" else 0)) % 5
            photo(base / "1. Original Images" / folder / f"IDRiD_{i:03d}.jpg", grade, rng)
            rows.append((f"IDRiD_{i:03d}", grade, 0, ""))
        write_csv(base / "2. Groundtruths" / labels,
                  ("Image name", "Retinopathy grade", "Risk of macular edema ", ""), rows)
    return root


def report_rows(out):
    with (out / "report.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_aptos_is_detected_split_by_image_and_its_missing_file_reported(tmp_path):
    source = make_aptos(tmp_path / "aptos")
    manifest = prepare_cache(source, tmp_path / "cache", "center_crop", SIZE, workers=1)
    out = cache_dir(tmp_path / "cache", "center_crop", SIZE)
    assert manifest["format"] == "aptos"
    assert manifest["split"].startswith("by image (the names carry no patient)")
    assert manifest["counts"]["train"] + manifest["counts"]["test"] == 12
    train = read_split_index(out, out / "images", "train")
    assert train.paths[0].suffix == ".jpeg" and train.paths[0].is_file()  # PNG in, JPEG out
    reasons = {row["name"]: row["reason"] for row in report_rows(out)}
    assert "file not found" in reasons["0bad0bad0bad"]


def test_messidor2_excludes_ungradable_images_and_reports_them(tmp_path):
    source = make_messidor2(tmp_path / "messidor")
    code = main(["--no-audit",
                 str(source), str(tmp_path / "cache"), "--size", str(SIZE), "--workers", "1",
                 "--split", "none"])
    assert code == 1  # prepared, with images left out (see report.csv)
    out = cache_dir(tmp_path / "cache", "center_crop", SIZE)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "messidor2" and manifest["split"].startswith("none")
    assert manifest["counts"] == {"train": 0, "test": 10, "skipped": 2, "converted": 0,
                                  "ignored": 0}
    test = read_split_index(out, out / "images", "test")
    grades = dict(zip((p.stem for p in test.paths), test.grades, strict=True))
    assert grades["20051020_43801_0100_PP"] == 1 and grades["IM000004"] == 4  # adjudicated
    ungradable = [row for row in report_rows(out) if "ungradable" in row["reason"]]
    assert sorted(row["name"] for row in ungradable) == ["IM999998", "IM999999"]


def test_idrid_keeps_its_own_split_with_same_numbered_images_apart(tmp_path):
    source = make_idrid(tmp_path / "idrid")
    manifest = prepare_cache(source, tmp_path / "cache", "center_crop", SIZE, workers=1)
    out = cache_dir(tmp_path / "cache", "center_crop", SIZE)
    assert manifest["format"] == "idrid" and "own training and testing split" in manifest["split"]
    train = read_split_index(out, out / "images", "train")
    test = read_split_index(out, out / "images", "test")
    assert len(train) == 8 and len(test) == 5
    assert {p.stem for p in test.paths} == {f"test-IDRiD_{i:03d}" for i in range(1, 6)}
    # test-IDRiD_001 is the testing photograph (grade 3), not the training one (grade 1).
    first = dict(zip((p.stem for p in test.paths), test.grades, strict=True))
    assert first["test-IDRiD_001"] == 3
    trained_first = cv2.imread(str(out / "images" / "IDRiD_001.jpeg"))
    tested_first = cv2.imread(str(out / "images" / "test-IDRiD_001.jpeg"))
    assert np.abs(trained_first.astype(int) - tested_first.astype(int)).mean() > 1


def test_idrid_training_set_alone_gets_a_test_split_made_by_image_stratified(tmp_path, caplog):
    """IDRiD's training set without its testing set (as ../shared/idrid-grading holds it):
    prepare makes a test split, as it makes Kaggle's, says so, records it and exits 0. It used
    to exit 2, "No usable test images"."""
    source = make_idrid(tmp_path / "idrid", n_train=20, n_test=0)
    caplog.set_level("WARNING")
    assert main(["--no-audit", str(source), str(tmp_path / "cache"), "--size", str(SIZE),
                 "--workers", "1"]) == 0
    out = cache_dir(tmp_path / "cache", "center_crop", SIZE)
    manifest = json.loads((out / "manifest.json").read_text())
    assert "without a test split of its own" in manifest["split"]
    assert "by image (the names carry no patient), seed 0" in manifest["split"]
    assert "no test images of its own" in caplog.text
    train = read_split_index(out, out / "images", "train")
    test = read_split_index(out, out / "images", "test")
    # The lab's share (20 %) within each grade: one of each grade's four images.
    assert len(train) == 15 and sorted(test.grades) == [0, 1, 2, 3, 4]
    assert not {p.stem for p in train.paths} & {p.stem for p in test.paths}


def test_idrid_testing_rows_that_are_all_unusable_are_not_replaced_by_a_made_split(
        tmp_path, caplog):
    """A testing label file whose every row is unusable (no grade 0-4) is the user's to fix:
    prepare stops with "No usable test images", as before, rather than carving a test split
    out of the training photographs."""
    source = make_idrid(tmp_path / "idrid")
    labels = (source / "B. Disease Grading" / "2. Groundtruths"
              / "b. IDRiD_Disease Grading_Testing Labels.csv")
    header, *rows = labels.read_text().splitlines()
    labels.write_text("\n".join([header, *(r.replace(",", ",x", 1) for r in rows)]) + "\n")
    assert main(["--no-audit", str(source), str(tmp_path / "cache"), "--size", str(SIZE),
                 "--workers", "1"]) == 2
    assert "No usable test images" in caplog.text
    assert "no test images of its own" not in caplog.text


def test_an_unknown_layout_names_the_known_ones(tmp_path, caplog):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "labels.csv").write_text("file,score\na,1\n")
    assert main(["--no-audit",
                 str(tmp_path / "photos"), str(tmp_path / "cache"), "--workers", "1"]) == 2
    assert "APTOS" in caplog.text and "--format" in caplog.text


@pytest.mark.parametrize("fmt", ["aptos", "idrid"])
def test_a_prepared_public_set_trains_and_evaluates_as_kaggle_data(tmp_path, fmt):
    from retino.data.load.loaders import read_index
    from tests.conftest import compose_config

    source = (make_aptos if fmt == "aptos" else make_idrid)(tmp_path / fmt)
    prepare_cache(source, tmp_path / "cache", "center_crop", SIZE, workers=1, fmt=fmt)
    root = cache_dir(tmp_path / "cache", "center_crop", SIZE)
    index = read_index(compose_config(["data=kaggle", f"data.root={root}"]).data)
    assert len(index["train"]) > 0 and len(index["test"]) > 0


def test_messidor2s_examination_list_makes_the_patients(tmp_path):
    """Messidor-2 names carry no patient; its examination list (a row per exam naming both
    eyes' images, ';'-separated) does. prepare finds it, keeps each exam's eyes on one side of
    the split and writes patients.csv, which the split index reads; without the list every
    image is its own patient."""
    source = make_messidor2(tmp_path / "messidor", n=40)
    images = sorted(p.name for p in (source / "IMAGES").iterdir())[:40]
    pairs = [images[i:i + 2] for i in range(0, 40, 2)]
    (source / "messidor-2.csv").write_text(
        "left;right\n" + "".join(f"{a};{b}\n" for a, b in pairs))
    manifest = prepare_cache(source, tmp_path / "cache", "center_crop", SIZE, workers=1)
    assert manifest["patients"].endswith("messidor-2.csv")
    assert manifest["split"].startswith("by patient")
    out = cache_dir(tmp_path / "cache", "center_crop", SIZE)
    assert (out / "patients.csv").is_file()
    index = {split: read_split_index(out, out / "images", split) for split in ("train", "test")}
    whose = {p.stem: patient for part in index.values()
             for p, patient in zip(part.paths, part.patients, strict=True)}
    for a, b in pairs:
        a, b = a.rsplit(".", 1)[0], b.rsplit(".", 1)[0]
        if a in whose and b in whose:  # both gradable
            assert whose[a] == whose[b]
    assert not set(index["train"].patients) & set(index["test"].patients)
    assert len(set(whose.values())) < len(whose)


def test_a_patients_file_with_image_and_patient_columns_is_used(tmp_path):
    source = make_aptos(tmp_path / "aptos")
    names = [f"{i:04x}a1b2c3" for i in range(12)]
    write_csv(tmp_path / "people.csv", ("image", "patient"),
              [(name, f"person{i // 3}") for i, name in enumerate(names)])
    prepare_cache(source, tmp_path / "cache", "center_crop", SIZE, workers=1, split="none",
                  patients=tmp_path / "people.csv")
    out = cache_dir(tmp_path / "cache", "center_crop", SIZE)
    test = read_split_index(out, out / "images", "test")
    assert all(patient.startswith("person") for patient in test.patients)


def test_patients_that_a_sets_own_split_divides_are_warned_about(tmp_path, caplog):
    source = make_idrid(tmp_path / "idrid")
    write_csv(tmp_path / "people.csv", ("image", "patient"),
              [("IDRiD_001", "p1"), ("test-IDRiD_001", "p1")])  # one person on both sides
    prepare_cache(source, tmp_path / "cache", "center_crop", SIZE, workers=1,
                  patients=tmp_path / "people.csv")
    assert "1 patient(s) have images on both sides" in caplog.text
