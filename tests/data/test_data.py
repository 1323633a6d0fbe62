import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from retino.core.errors import DataError
from retino.data.layout import read_split_index, write_split_csvs
from retino.data.load.dataset import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RetinopathyDataset,
    build_transform,
    collate_images,
    normalize_images,
    read_rgb,
)
from retino.data.load.loaders import build_loaders, locate_dataset, read_index
from retino.data.prepare.demo import KAGGLE_GRADE_SHARES, ensure_demo_dataset, grade_counts
from retino.training.optimization import class_weights
from tests.conftest import compose_config
from tests.helpers.sources import make_kaggle_folder


def test_reads_lab_layout_in_csv_order(tmp_path):
    root = make_kaggle_folder(tmp_path / "dr")
    index = read_split_index(root, root / "images", "train")
    assert len(index) == 6
    assert index.grades == [0, 1, 2, 3, 4, 0]
    assert index.paths[1] == root / "images" / "1_left_train.jpeg"


def test_images_come_back_rgb(tmp_path):
    root = make_kaggle_folder(tmp_path / "dr")
    rgb = read_rgb(root / "images" / "0_right_train.jpeg")
    red, green, blue = rgb[20, 20]
    assert red > 200 and green < 40 and blue < 40  # a red JPEG stays red (BGR converted)


def test_dataset_returns_uint8_images_that_are_normalised_on_the_device(tmp_path):
    root = make_kaggle_folder(tmp_path / "dr")
    dataset = RetinopathyDataset(read_split_index(root, root / "images", "test"),
                                build_transform(32, train=True, hflip=0.5, vflip=0.5))
    image, grade = dataset[3]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8 and grade == 3
    images, grades = collate_images([dataset[i] for i in range(4)])
    assert images.shape == (4, 3, 32, 32) and grades.tolist() == [0, 1, 2, 3]
    assert images.is_contiguous(memory_format=torch.channels_last)  # as the GPU step takes it
    model_input = normalize_images(images)
    assert model_input.dtype == torch.float32  # red high, blue low after normalising
    assert model_input[3, 0].mean() > 1.5 and model_input[3, 2].mean() < -1.0


@pytest.mark.parametrize("augmentation", [{}, {"hflip": 0.5}])
def test_the_model_sees_what_the_float_pipeline_gave_within_rounding(tmp_path, augmentation):
    """The pipeline before uint8 samples: the same steps on the permuted decoded image, then
    scaled and normalised in the worker. For none and flip, equal to float rounding."""
    from torchvision.transforms import v2

    root = make_kaggle_folder(tmp_path / "dr")
    index = read_split_index(root, root / "images", "train")
    uint8_path = RetinopathyDataset(index, build_transform(32, train=True, **augmentation))
    float_path = v2.Compose([build_transform(32, train=True, **augmentation),
                             v2.ToDtype(torch.float32, scale=True),
                             v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    for i in range(len(index)):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(i)
            before = float_path(torch.from_numpy(read_rgb(index.paths[i])).permute(2, 0, 1))
        after = normalize_images(uint8_path[(i, i)][0][None])[0]
        torch.testing.assert_close(after, before, rtol=0, atol=1e-5)


@pytest.mark.parametrize("damage, message", [
    ("conflicting", r"lists 1 image\(s\) twice with different grades: 1_left_train"),
    ("missing", "2 of 6 train images are missing"),
    ("bad_label", r"2 label\(s\) outside the grades 0-4"),
    ("short_labels", "lists 6 images but train_label.csv has 5 labels"),
    ("empty", "split .* is empty"),
])
def test_index_problems_are_clear_errors(tmp_path, damage, message):
    root = make_kaggle_folder(tmp_path / "dr")
    labels = root / "train_label.csv"
    if damage == "missing":
        for name in ("0_right_train", "3_left_train"):
            (root / "images" / f"{name}.jpeg").unlink()
    elif damage == "bad_label":
        labels.write_text("0\n1\n7\n2\n-1\n3\n")
    elif damage == "short_labels":
        labels.write_text("0\n1\n2\n3\n4\n")
    elif damage == "conflicting":  # one image listed twice, graded 1 and 3 (prepare refuses it)
        names = [f"{i}_{'left' if i % 2 else 'right'}_train" for i in range(6)]
        write_split_csvs(root, "train", [*names, "1_left_train"], [0, 1, 2, 3, 4, 0, 3])
    else:
        write_split_csvs(root, "train", [], [])
    with pytest.raises(DataError, match=message):
        read_split_index(root, root / "images", "train")


def test_missing_files_error_names_the_first_ones(tmp_path):
    root = make_kaggle_folder(tmp_path / "dr")
    (root / "images" / "4_right_train.jpeg").unlink()
    with pytest.raises(DataError, match="4_right_train.jpeg"):
        read_split_index(root, root / "images", "train")


def test_empty_tiny_and_truncated_photographs_stop_training_before_its_first_epoch(tmp_path):
    """A folder no prepare checked: OpenCV's raw assertion stopped training mid-epoch (exit 1,
    no file named). Now every bad photograph is named, with its reason, before any work."""
    from retino.training.pipeline import train_and_evaluate
    from tests.conftest import TINY, compose_config

    root = make_kaggle_folder(tmp_path / "dr", n_train=8)
    images = root / "images"
    (images / "0_right_train.jpeg").write_bytes(b"")
    cv2.imwrite(str(images / "1_left_train.jpeg"), np.zeros((1, 1, 3), np.uint8))
    whole = (images / "2_right_train.jpeg").read_bytes()
    (images / "3_left_test.jpeg").write_bytes(whole[:-40])  # its end cut off
    cfg = compose_config([*TINY, "data=kaggle", f"data.root={root}"])
    with pytest.raises(DataError) as refused:
        train_and_evaluate(cfg, tmp_path / "run")
    message = str(refused.value)
    assert "3 photograph(s) cannot be trained on" in message
    assert "0_right_train.jpeg: empty file (0 bytes)" in message
    assert "1_left_train.jpeg: too small to be a photograph: 1x1 px" in message
    assert "3_left_test.jpeg: truncated JPEG" in message
    assert not (tmp_path / "run" / "last.pt").exists()


def test_bad_photographs_skip_trains_without_them_and_lists_each(tmp_path):
    """bad_photographs=skip: the run trains on the rest and says what it left out, in its log,
    in skipped_photographs.csv and as a count on the run."""
    from retino.core.names import SKIPPED_PHOTOGRAPHS_FILE
    from retino.training.pipeline import train_and_evaluate
    from tests.conftest import TINY, compose_config

    root = make_kaggle_folder(tmp_path / "dr", n_train=10)
    images = root / "images"
    (images / "0_right_train.jpeg").write_bytes(b"")
    (images / "3_left_test.jpeg").write_bytes((images / "2_right_train.jpeg").read_bytes()[:-40])
    cfg = compose_config([*TINY, "data=kaggle", f"data.root={root}", "bad_photographs=skip",
                          "data.val_fraction=0"])
    result = train_and_evaluate(cfg, tmp_path / "run")
    skipped = pd.read_csv(tmp_path / "run" / SKIPPED_PHOTOGRAPHS_FILE)
    assert sorted(Path(p).name for p in skipped["path"]) == ["0_right_train.jpeg",
                                                             "3_left_test.jpeg"]
    assert set(skipped["reason"]) == {"empty file (0 bytes)",
                                      "truncated JPEG (no end-of-image marker)"}
    predictions = pd.read_csv(tmp_path / "run" / "predictions_test.csv")
    assert "3_left_test" not in set(predictions["image"]) and len(predictions) > 0
    assert result.history  # it trained


def test_a_jpeg_with_a_long_trailer_is_whole(tmp_path):
    """A phone's "motion photo" appends more than 64 KB after the image: the end marker is
    found by reading on, and the photograph is not called truncated."""
    from retino.data.load.dataset import photograph_problems

    root = make_kaggle_folder(tmp_path / "dr")
    photograph = root / "images" / "0_right_train.jpeg"
    whole = photograph.read_bytes()
    photograph.write_bytes(whole + bytes(70_000))
    cut = root / "images" / "1_left_train.jpeg"
    cut.write_bytes(whole[:-40])
    assert photograph_problems([photograph, cut]) == [(cut, "truncated JPEG (no end-of-image "
                                                             "marker)")]


def test_undecodable_image_error_names_the_file(tmp_path):
    root = make_kaggle_folder(tmp_path / "dr")
    broken = root / "images" / "2_right_train.jpeg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    dataset = RetinopathyDataset(read_split_index(root, root / "images", "train"),
                                build_transform(32, train=False))
    with pytest.raises(DataError, match="2_right_train.jpeg"):
        dataset[2]


def test_kaggle_config_reads_root_and_rejects_missing_folder(tmp_path):
    root = make_kaggle_folder(tmp_path / "dr")
    index = read_index(compose_config(["data=kaggle", f"data.root={root}"]).data)
    assert (len(index["train"]), len(index["test"])) == (6, 4)
    with pytest.raises(DataError, match="is not a folder"):
        locate_dataset(compose_config(["data=kaggle", f"data.root={tmp_path / 'nope'}"]).data)


def test_grade_counts_follow_kaggle_balance():
    counts = grade_counts(1000)
    assert sum(counts) == 1000 and min(counts) >= 1
    shares = np.array(KAGGLE_GRADE_SHARES) / sum(KAGGLE_GRADE_SHARES)
    assert np.abs(np.array(counts) / 1000 - shares).max() < 0.005
    assert grade_counts(5) == [1, 1, 1, 1, 1]


def test_demo_set_is_kaggle_layout_deterministic_and_cached(tmp_path):
    first = ensure_demo_dataset(tmp_path / "a", 12, 6, 64, seed=7)
    second = ensure_demo_dataset(tmp_path / "b", 12, 6, 64, seed=7)
    index = read_split_index(first, first / "images", "train")  # the same loader reads it
    assert len(index) == 12 and set(index.grades) == {0, 1, 2, 3, 4}
    for name in ("train_img.csv", "test_label.csv", "images/demo_test_00001_right.jpeg"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    mtime = (first / "train_img.csv").stat().st_mtime_ns
    assert ensure_demo_dataset(tmp_path / "a", 12, 6, 64, seed=7) == first
    assert (first / "train_img.csv").stat().st_mtime_ns == mtime  # reused, not regenerated


def test_demo_photographs_are_two_eyes_of_patients_with_like_grades(tmp_path):
    """Named `<patient>_<left|right>` as Kaggle's are, so the default run has patients (the
    per-patient rows, the patient intervals, the fellow-eye leakage check); fellow eyes' grades
    agree more than chance, and the grades keep Kaggle's shares."""
    root = ensure_demo_dataset(tmp_path, 201, 5, 16, seed=3)
    index = read_split_index(root, root / "images", "train")
    assert len(set(index.patients)) == 101  # 100 with two eyes, one with one
    by_patient: dict[str, list[int]] = {}
    for patient, grade in zip(index.patients, index.grades, strict=True):
        by_patient.setdefault(patient, []).append(grade)
    pairs = np.array([grades for grades in by_patient.values() if len(grades) == 2])
    assert np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1] > 0.5
    assert sorted(np.bincount(index.grades, minlength=5)) == sorted(grade_counts(201))
    assert all(name.rsplit("_", 1)[1] in ("left", "right")
               for name in (root / "train_img.csv").read_text().split()[1:])


def test_demo_fundus_is_round_reddish_on_black(tmp_path):
    root = ensure_demo_dataset(tmp_path, 5, 5, 64, seed=1)
    rgb = read_rgb(root / "images" / "demo_train_00000_left.jpeg")
    assert rgb[:3, :3].max() < 20  # corner: black surround
    red, green, blue = rgb[24:40, 24:40].reshape(-1, 3).mean(axis=0)
    assert red > green > blue  # orange-red fundus


def test_balanced_sampler_and_weights_favour_rare_grades(tmp_path):
    root = ensure_demo_dataset(tmp_path, 100, 5, 32, seed=1)
    index = {s: read_split_index(root, root / "images", s) for s in ("train", "test")}
    cfg = compose_config(["augmentation=none"])
    train, _ = build_loaders(index, cfg.augmentation, 32, 100, 0, seed=0, balanced=True)
    _, grades = next(iter(train))
    assert (grades == 0).float().mean() < 0.5  # 73% of the images, about 20% of the draws
    weights = class_weights(index["train"].grades)
    assert weights[4] > weights[0] * 10


def test_auto_worker_count_follows_the_cores_this_job_may_use(monkeypatch):
    from retino.data.load.loaders import resolve_num_workers

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(4)))
    assert resolve_num_workers("auto", feeds_gpu=True) == 3  # one core left for training
    assert resolve_num_workers("auto", feeds_gpu=False) == 0  # CPU training uses every core
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # a launcher split the machine between jobs
    assert resolve_num_workers("auto", feeds_gpu=True) == 1
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(1)))
    assert resolve_num_workers("auto", feeds_gpu=True) == 0  # one core: load in-process
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(96)))
    assert resolve_num_workers("auto", feeds_gpu=True) == 95  # every core but the training one
    assert resolve_num_workers(5, feeds_gpu=False) == 5


def test_loader_workers_are_fitted_to_the_shared_memory_there_is(monkeypatch, tmp_path, caplog):
    import retino.data.load.loaders as loaders

    monkeypatch.setattr(loaders, "SHARED_MEMORY", tmp_path)
    free = 64 * 2**20  # a container's default /dev/shm
    monkeypatch.setattr(loaders.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(
        free, 0, free))
    batch = 64 * 3 * 512 * 512  # 48 MiB of uint8: not even one fits in half of 64 MiB
    assert loaders.fit_shared_memory(12, 2, 64, 512)[0] == 0  # loads in the training process
    assert "Shared memory" in caplog.text and "--shm-size" in caplog.text
    free = 40 * 2 * 2 * batch  # room for 40 batches in flight
    assert loaders.fit_shared_memory(12, 2, 64, 512) == (12, 2)  # 24 fit: as asked
    assert loaders.fit_shared_memory(60, 2, 64, 512) == (40, 1)  # 120 do not
    # Four jobs of a parallel sweep start together: each budgets a quarter, not all of it.
    assert loaders.fit_shared_memory(12, 2, 64, 512, jobs_at_once=4) == (10, 1)
