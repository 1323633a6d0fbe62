"""Preparing Kaggle-layout folders into the training layout, on tiny generated JPEGs."""

import csv
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from retino import PROJECT_ROOT
from retino.core.errors import DataError
from retino.data.layout import patient_of
from retino.data.load.loaders import cache_params, read_index
from retino.data.prepare.cache import cache_dir, main, prepare_cache
from retino.data.prepare.demo import grade_counts
from retino.data.prepare.preprocess import (
    center_crop,
    decode_for_size,
    fundus_box,
    graham,
    retina_crop,
)
from retino.data.split import LAB_TEST_FRACTION, split_by_patient
from retino.training.pipeline import train_and_evaluate
from tests.conftest import compose_config
from tests.helpers.sources import SIZE, add_ungradable_photographs, kaggle_frame, make_kaggle_source


def add_bad_files(root: Path) -> dict[str, str]:
    """One file per kind of bad input; returns name -> a pattern its reason matches."""
    train = root / "train"
    good = (train / "0_left.jpeg").read_bytes()
    (train / "90_left.jpeg").write_bytes(good[: len(good) // 2])
    (train / "90_right.jpeg").write_bytes(b"")
    (train / "91_left.jpeg").write_text("this is not an image\n")
    garbage = np.random.default_rng(0).integers(0, 256, 400, dtype=np.uint8).tobytes()
    (train / "91_right.jpeg").write_bytes(good[:200] + garbage + b"\xff\xd9")  # corrupt data
    cv2.imwrite(str(train / "92_left.jpeg"), np.zeros((20, 30, 3), np.uint8) + 80)
    expected = {"90_left": "truncated", "90_right": "empty file", "91_left": "not an image",
                "91_right": "not an image|cannot be decoded",
                "92_left": "smaller than the target",
                "93_left": "file not found", "../etc/passwd": "unsafe image name",
                "94_left": "not a grade"}
    rows = [(name, 1) for name in expected if name != "94_left"] + [("94_left", 9)]
    with (root / "trainLabels.csv").open("a", newline="") as f:
        csv.writer(f).writerows(rows)
    return expected


def add_converted_files(root: Path) -> list[str]:
    """Grayscale, RGBA and 16-bit images: prepared after conversion, and reported."""
    rng = np.random.default_rng(1)
    frame = kaggle_frame(2, rng)
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(root / "train" / "95_left.jpeg"), gray)
    ok, rgba_png = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA))
    (root / "train" / "95_right.jpeg").write_bytes(rgba_png.tobytes())
    ok, deep_png = cv2.imencode(".png", frame.astype(np.uint16) * 257)
    (root / "train" / "96_left.jpeg").write_bytes(deep_png.tobytes())
    with (root / "trainLabels.csv").open("a", newline="") as f:
        csv.writer(f).writerows([("95_left", 2), ("95_right", 2), ("96_left", 2)])
    return ["95_left", "95_right", "96_left"]


def read_report(cache: Path) -> dict[str, tuple[str, str]]:
    """name -> (action, reason) of its first row (a converted photograph may also be marked
    not gradable: see read_quality)."""
    with (cache / "report.csv").open() as f:
        rows = {}
        for row in csv.DictReader(f):
            rows.setdefault(row["name"], (row["action"], row["reason"]))
        return rows


def read_quality(cache: Path) -> dict[str, tuple[str, str]]:
    """name -> (action, reason) of the photographs judged not gradable."""
    with (cache / "report.csv").open() as f:
        return {row["name"]: (row["action"], row["reason"]) for row in csv.DictReader(f)
                if row["action"] in ("not gradable", "dropped")}


def test_patient_split_keeps_both_eyes_together_and_stratifies():
    rng = np.random.default_rng(0)
    grades = list(rng.permutation(np.repeat(range(5), grade_counts(2000))))
    names = [f"{i // 2}_{'left' if i % 2 else 'right'}" for i in range(2000)]
    train, test = split_by_patient(names, grades, seed=3)
    assert sorted(train + test) == list(range(2000))
    assert not {patient_of(names[i]) for i in train} & {patient_of(names[i]) for i in test}
    assert len(test) / 2000 == pytest.approx(LAB_TEST_FRACTION, abs=0.01)
    test_share = np.bincount([grades[i] for i in test], minlength=5) / len(test)
    train_share = np.bincount([grades[i] for i in train], minlength=5) / len(train)
    assert np.abs(test_share - train_share).max() < 0.03
    assert split_by_patient(names, grades, seed=3) == (train, test)  # seeded


def test_prepares_kaggle_source_and_reports_every_bad_file(tmp_path):
    source = make_kaggle_source(tmp_path / "kaggle")
    expected_bad = add_bad_files(source)
    converted = add_converted_files(source)
    # the command as users type it: the package's __main__, its worker processes started
    proc = subprocess.run([sys.executable, "-m", "retino.data.prepare", "--no-audit", str(source),
                           str(tmp_path / "cache"), "--size", str(SIZE), "--workers", "2"],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]  # something was skipped: a script can tell
    cache = cache_dir(tmp_path / "cache", "center_crop", SIZE)
    report = read_report(cache)
    for name, words in expected_bad.items():
        assert report[name][0] == "skipped", name
        assert re.search(words, report[name][1]), (name, report[name])
    for name in converted:
        assert report[name][0] == "converted" and (cache / "images" / f"{name}.jpeg").is_file()
    index = read_index(compose_config(["data=kaggle", f"data.root={cache}"]).data)
    assert len(index["train"]) + len(index["test"]) == 20 + len(converted)
    for path in index["train"].paths + index["test"].paths:
        assert cv2.imread(str(path)).shape == (SIZE, SIZE, 3)
    manifest = json.loads((cache / "manifest.json").read_text())
    assert (manifest["method"], manifest["size"]) == ("center_crop", SIZE)
    assert manifest["counts"]["skipped"] == len(expected_bad)
    assert manifest["source"] == str(source.resolve())


def test_lab_csvs_are_used_as_they_are_and_length_mismatch_is_reported(tmp_path):
    source = make_kaggle_source(tmp_path / "lab", patients=3)
    (source / "train").rename(source / "images")
    (source / "train_img.csv").write_text("0_left\n0_right\n1_left\n1_right\n")
    (source / "train_label.csv").write_text("0\n1\n2\n")
    (source / "test_img.csv").write_text("2_left\n2_right\n")
    (source / "test_label.csv").write_text("3\n4\n")
    manifest = prepare_cache(source, tmp_path / "cache", "center_crop", SIZE, workers=1)
    assert manifest["split"].startswith("lab CSVs")
    assert manifest["counts"] == {"train": 3, "test": 2, "skipped": 1, "converted": 0,
                                  "ignored": 0}
    cache = cache_dir(tmp_path / "cache", "center_crop", SIZE)
    assert (cache / "test_img.csv").read_text() == "2_left\n2_right\n"
    assert "differ in length" in read_report(cache)["1_right"][1]


def test_interrupted_run_leaves_no_truncated_file_and_rerun_finishes(tmp_path, monkeypatch):
    source = make_kaggle_source(tmp_path / "kaggle", patients=6)
    real_replace, calls = os.replace, Counter()

    def crash_on_fifth(src, dst):  # the process "dies" between writing and renaming
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr("retino.data.prepare.cache.os.replace", crash_on_fifth)
    with pytest.raises(KeyboardInterrupt):
        prepare_cache(source, tmp_path / "cache", "retina_crop", SIZE, workers=1)
    cache = cache_dir(tmp_path / "cache", "retina_crop", SIZE)
    assert len(list((cache / "images").glob("*.jpeg"))) == 4  # only complete files by name
    monkeypatch.setattr("retino.data.prepare.cache.os.replace", real_replace)
    first = sorted((cache / "images").glob("*.jpeg"))[0]
    before = first.stat().st_mtime_ns
    manifest = prepare_cache(source, tmp_path / "cache", "retina_crop", SIZE, workers=1)
    assert manifest["counts"]["train"] + manifest["counts"]["test"] == 12
    assert first.stat().st_mtime_ns == before  # done images are skipped, not redone
    assert not [p for p in (cache / "images").iterdir() if not p.name.endswith(".jpeg")]
    for path in (cache / "images").glob("*.jpeg"):
        assert path.read_bytes().endswith(b"\xff\xd9")
    prepare_cache(source, tmp_path / "cache", "retina_crop", SIZE, workers=1, force=True)
    assert first.stat().st_mtime_ns != before  # --force rebuilds


def off_center_fundus() -> np.ndarray:
    """A disc of radius 60 centred at (70, 50) on a 240x160 frame: cut by the top edge."""
    frame = np.zeros((160, 240, 3), np.uint8)
    cv2.circle(frame, (70, 50), 60, (40, 80, 200), -1)
    return frame


def test_retina_crop_keeps_the_whole_off_center_disc():
    out = retina_crop(off_center_fundus(), 64)
    assert out.shape == (64, 64, 3)
    x0, y0, x1, y1 = fundus_box(out)
    assert x0 <= 1 and x1 >= 63  # the full width of the disc, edge to edge
    assert y1 >= 63 and y0 >= 3  # the 10 px cut off above the frame (5 px here) stay black
    x0, _, x1, _ = fundus_box(center_crop(off_center_fundus(), 64))
    assert x1 - x0 < 50  # the lab's crop cuts the sides of this disc


def test_graham_greys_the_rim_and_keeps_the_size():
    out = graham(off_center_fundus(), 64)
    assert out.shape == (64, 64, 3)
    assert (out[0, 0] == 128).all() and (out[63, 63] == 128).all()


def test_large_images_are_decoded_at_reduced_scale(tmp_path):
    path = tmp_path / "big.jpeg"
    cv2.imwrite(str(path), kaggle_frame(0, np.random.default_rng(0), 800, 600))
    assert decode_for_size(path, 800, 600, 64).shape == (75, 100, 3)  # 1/8 scale
    assert decode_for_size(path, 800, 600, 200).shape == (300, 400, 3)  # 1/2 scale
    assert decode_for_size(path, 800, 600, 400).shape == (600, 800, 3)  # full decode


def test_training_side_records_which_cache_it_read(tmp_path, caplog):
    source = make_kaggle_source(tmp_path / "kaggle", patients=4)
    add_bad_files(source)
    add_ungradable_photographs(source)
    prepare_cache(source, tmp_path / "cache", "graham", SIZE, workers=1)
    params = cache_params(cache_dir(tmp_path / "cache", "graham", SIZE))
    assert params["cache.method"] == "graham" and params["cache.size"] == SIZE
    assert (params["cache.quality"], params["cache.not_gradable"]) == ("keep", 2)
    assert params["cache.skipped"] == 8 and params["cache.source"] == str(source.resolve())
    assert "skipped 8 images" in caplog.text


def test_blank_label_line_is_reported_and_shifts_nothing(tmp_path):
    source = make_kaggle_source(tmp_path / "lab", patients=3)
    (source / "train").rename(source / "images")
    (source / "train_img.csv").write_text("0_left\n0_right\n1_left\n1_right\n")
    (source / "train_label.csv").write_text("0\n\n2\n3\n")  # 0_right has no label
    (source / "test_img.csv").write_text("2_left\n2_right\n1_left\n")  # 1_left also in train
    (source / "test_label.csv").write_text("3\n4\n1\n")
    prepare_cache(source, tmp_path / "cache", "center_crop", SIZE, workers=1)
    cache = cache_dir(tmp_path / "cache", "center_crop", SIZE)
    assert (cache / "train_img.csv").read_text() == "0_left\n1_left\n1_right\n"
    assert (cache / "train_label.csv").read_text() == "0\n2\n3\n"  # 1_left keeps its own 2
    report = read_report(cache)
    assert "not a grade" in report["0_right"][1]
    assert "more than once" in report["1_left"][1]  # the test copy: no leak into the test set
    assert (cache / "test_img.csv").read_text() == "2_left\n2_right\n"


def test_bom_duplicates_and_trailer_after_end_marker(tmp_path):
    source = make_kaggle_source(tmp_path / "kaggle", patients=6)
    labels = (source / "trainLabels.csv").read_text()
    (source / "trainLabels.csv").write_text("\ufeff" + labels + "0_left,4\n", encoding="utf-8")
    trailer = source / "train" / "1_left.jpeg"
    trailer.write_bytes(trailer.read_bytes() + b"camera trailer " * 20)
    assert main(["--no-audit", str(source), str(tmp_path / "cache"), "--size", str(SIZE),
                 "--workers", "1"]) == 1  # the repeated row is skipped
    cache = cache_dir(tmp_path / "cache", "center_crop", SIZE)
    assert list(read_report(cache)) == ["0_left"]  # only the repeat; 1_left was prepared
    assert (cache / "images" / "1_left.jpeg").is_file()


def test_exit_status_zero_when_all_prepared_two_when_nothing_can_be(tmp_path):
    source = make_kaggle_source(tmp_path / "kaggle", patients=6)
    assert main(["--no-audit", str(source), str(tmp_path / "cache"), "--size", str(SIZE),
                 "--workers", "1"]) == 0
    (source / "train").rename(source / "elsewhere")
    assert main(["--no-audit", str(source), str(tmp_path / "c2"), "--size", str(SIZE)]) == 2
    assert main(["--no-audit", str(tmp_path / "empty"), str(tmp_path / "c3")]) == 2


def test_conversions_stay_in_the_report_after_a_resume(tmp_path):
    source = make_kaggle_source(tmp_path / "kaggle", patients=6)
    converted = add_converted_files(source)
    for _ in range(2):
        manifest = prepare_cache(source, tmp_path / "cache", "center_crop", SIZE, workers=1)
    assert manifest["counts"]["converted"] == len(converted)
    report = read_report(cache_dir(tmp_path / "cache", "center_crop", SIZE))
    assert all(report[name][0] == "converted" for name in converted)


def test_retina_crop_finds_the_dim_rim_of_a_wide_frame_cut_top_and_bottom():
    frame = np.zeros((400, 600, 3), np.uint8)
    yy, xx = np.mgrid[0:400, 0:600]
    dist = np.hypot(xx - 300, yy - 200) / 230  # disc of radius 230, cut top and bottom
    brightness = np.clip(1 - 0.85 * dist**2, 0, 1) * (dist <= 1)  # the rim at 15% brightness
    frame[..., 2] = (200 * brightness).astype(np.uint8)  # red
    frame[..., 1] = (80 * brightness).astype(np.uint8)
    x0, y0, x1, y1 = fundus_box(frame)
    assert x0 <= 72 and x1 >= 528  # the full width of the disc (70..530)
    out = retina_crop(frame, 64)
    x0, y0, x1, y1 = fundus_box(out)
    assert x0 <= 1 and x1 >= 63 and y0 >= 3 and y1 <= 61  # whole width, black above and below


@pytest.mark.slow
def test_a_run_on_a_prepared_cache_logs_which_cache_it_read(tmp_path):
    from retino.training.tracker import NullTracker

    class Recorder(NullTracker):
        params: dict = {}

        def log_params(self, params):
            self.params.update(params)

    source = make_kaggle_source(tmp_path / "kaggle", patients=10)
    prepare_cache(source, tmp_path / "cache", "retina_crop", 64, workers=1)
    cache = cache_dir(tmp_path / "cache", "retina_crop", 64)
    cfg = compose_config(["data=kaggle", f"data.root={cache}", "data.num_workers=0",
                          "resolution=64px", "epochs=1", "batch_size=4"])
    recorder = Recorder()
    train_and_evaluate(cfg, tmp_path / "run", recorder)
    assert recorder.params["cache.method"] == "retina_crop" and recorder.params["cache.size"] == 64


def test_byte_identical_files_across_splits_are_reported(tmp_path, caplog):
    """The same photograph under two names, one in train and one in test: prepare keeps both
    but lists the pair in report.csv, counts it in the manifest and warns."""
    source = make_kaggle_source(tmp_path / "lab", patients=3)
    (source / "train").rename(source / "images")
    (source / "images" / "2_right.jpeg").write_bytes((source / "images" / "0_left.jpeg")
                                                     .read_bytes())
    (source / "train_img.csv").write_text("0_left\n0_right\n1_left\n1_right\n")
    (source / "train_label.csv").write_text("0\n1\n2\n3\n")
    (source / "test_img.csv").write_text("2_left\n2_right\n")
    (source / "test_label.csv").write_text("3\n4\n")
    manifest = prepare_cache(source, tmp_path / "cache", "center_crop", SIZE, workers=1)
    assert manifest["identical_across_splits"] == 1
    cache = cache_dir(tmp_path / "cache", "center_crop", SIZE)
    assert read_report(cache)["2_right"] == ("identical", "the same bytes as 0_left (train)")
    assert "byte-identical" in caplog.text


@pytest.mark.parametrize("mode", ["keep", "drop"])
def test_photographs_that_are_not_gradable_are_marked_or_dropped(tmp_path, mode):
    source = make_kaggle_source(tmp_path / "kaggle", patients=10)
    names = add_ungradable_photographs(source)
    manifest = prepare_cache(source, tmp_path / "cache", "center_crop", SIZE, workers=1,
                             quality=mode)
    cache = cache_dir(tmp_path / "cache", "center_crop", SIZE)
    verdicts = read_quality(cache)
    action = "not gradable" if mode == "keep" else "dropped"
    assert verdicts == {"97_left": (action, "no fundus disc found"),
                        "97_right": (action, "under-exposed")}
    assert manifest["quality"] == {"mode": mode, "not_gradable": 2,
                                   "dropped": 2 if mode == "drop" else 0,
                                   "reasons": {"no fundus disc found": 1, "under-exposed": 1}}
    listed = set((cache / "train_img.csv").read_text().split()) | \
        set((cache / "test_img.csv").read_text().split())
    assert (set(names) <= listed) == (mode == "keep")
    assert manifest["counts"]["train"] + manifest["counts"]["test"] == \
        (22 if mode == "keep" else 20)


def test_a_rerun_with_drop_leaves_out_what_the_first_run_marked(tmp_path):
    source = make_kaggle_source(tmp_path / "kaggle", patients=10)
    add_ungradable_photographs(source)
    prepare_cache(source, tmp_path / "cache", "center_crop", SIZE, workers=1)
    manifest = prepare_cache(source, tmp_path / "cache", "center_crop", SIZE, workers=1,
                             quality="drop")
    assert manifest["quality"]["dropped"] == 2
    cache = cache_dir(tmp_path / "cache", "center_crop", SIZE)
    assert "97_left" not in (cache / "train_img.csv").read_text().split() + \
        (cache / "test_img.csv").read_text().split()


def test_a_cache_prepared_without_the_assessment_gets_it_on_a_rerun(tmp_path):
    """Prepared with --quality off (or before the assessment existed), then again with keep:
    the images already there are assessed now, not taken as gradable unseen."""
    source = make_kaggle_source(tmp_path / "kaggle", patients=10)
    add_ungradable_photographs(source)
    prepare_cache(source, tmp_path / "cache", "center_crop", SIZE, workers=1, quality="off")
    manifest = prepare_cache(source, tmp_path / "cache", "center_crop", SIZE, workers=1)
    assert manifest["quality"]["not_gradable"] == 2
    assert set(read_quality(cache_dir(tmp_path / "cache", "center_crop", SIZE))) == \
        {"97_left", "97_right"}


def test_a_second_drop_rerun_keeps_the_dropped_out(tmp_path):
    source = make_kaggle_source(tmp_path / "kaggle", patients=10)
    add_ungradable_photographs(source)
    for mode in ("keep", "drop", "drop"):
        manifest = prepare_cache(source, tmp_path / "cache", "center_crop", SIZE, workers=1,
                                 quality=mode)
    assert manifest["quality"]["dropped"] == 2
    cache = cache_dir(tmp_path / "cache", "center_crop", SIZE)
    listed = (cache / "train_img.csv").read_text().split() + \
        (cache / "test_img.csv").read_text().split()
    assert "97_left" not in listed and "97_right" not in listed


def test_a_cache_of_an_older_graham_is_not_finished_by_the_new_one(tmp_path):
    """graham masks the detected field of view (version 2), found above the surround the
    border shows (version 3); a cache made by an older version must not be completed with
    today's images."""
    source = make_kaggle_source(tmp_path / "kaggle", patients=6)
    prepare_cache(source, tmp_path / "cache", "graham", SIZE, workers=1)
    cache = cache_dir(tmp_path / "cache", "graham", SIZE)
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["method_version"] == 3
    manifest["method_version"] = 2  # as version 2 wrote it
    (cache / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="version 2 of graham"):
        prepare_cache(source, tmp_path / "cache", "graham", SIZE, workers=1)
    del manifest["method_version"]  # as version 1 wrote it
    (cache / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="version 1 of graham"):
        prepare_cache(source, tmp_path / "cache", "graham", SIZE, workers=1)


def test_a_symlink_loop_among_the_photographs_is_reported_not_a_crash(tmp_path, capsys):
    """A symlink loop in the image folder ended prepare with a RuntimeError (exit 1, read as
    "some skipped"); it is now a photograph it ignores, and says why."""
    source = make_kaggle_source(tmp_path / "kaggle", patients=6)
    (source / "train" / "a.jpeg").symlink_to(source / "train" / "b.jpeg")
    (source / "train" / "b.jpeg").symlink_to(source / "train" / "a.jpeg")
    assert main(["--no-audit", str(source), str(tmp_path / "cache"), "--size", str(SIZE),
                 "--workers", "1"]) == 0
    report = read_report(cache_dir(tmp_path / "cache", "center_crop", SIZE))
    assert report["a"] == ("ignored", "a symbolic link loop, or a link to nothing") == report["b"]


def test_a_rerun_repairs_a_cached_image_that_is_no_longer_whole(tmp_path):
    """A re-run kept any non-empty cached file, a corrupt one too, for ever."""
    source = make_kaggle_source(tmp_path / "kaggle", patients=6)
    args = ["--no-audit", str(source), str(tmp_path / "cache"), "--size", str(SIZE),
            "--workers", "1"]
    assert main(args) == 0
    cached = next((cache_dir(tmp_path / "cache", "center_crop", SIZE) / "images").glob("*.jpeg"))
    whole = cached.read_bytes()
    cached.write_bytes(whole[: len(whole) // 2])
    assert main(args) == 0
    assert cached.read_bytes() == whole
