"""python -m retino.predict: a trained run grades a folder of raw photographs with its own
preprocessing. One run (conftest's trained_run), trained once on a cache prepared from camera-sized
photographs; the predictions must equal the run's own evaluation of the same images."""

import logging
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest

from retino.core.grades import PROBABILITY_COLUMNS
from retino.evaluation.predictions import read_predictions
from retino.predict import main
from tests.helpers.sources import clinic_folder


def test_raw_photographs_get_the_runs_own_evaluation_and_bad_files_are_listed(
        trained_run, tmp_path, caplog):
    run_dir, _, _, source, _ = trained_run
    evaluated = read_predictions(run_dir / "predictions_test.csv").set_index("image")
    clinic = clinic_folder(tmp_path, source, list(evaluated.index))
    out = tmp_path / "predictions.csv"
    with caplog.at_level(logging.INFO):
        assert main([str(run_dir), str(clinic), "--out", str(out)]) == 3  # some skipped
    frame = pd.read_csv(out, keep_default_na=False)
    assert len(frame) == len(evaluated) + 3
    graded = frame[frame["gradable"] == "True"].copy()
    graded.index = [name.rsplit("/", 1)[-1].removesuffix(".jpeg") for name in graded["image"]]
    graded = graded.loc[evaluated.index]
    # Same preprocessing (crop, JPEG encoding), resolution and normalisation as the evaluation.
    np.testing.assert_allclose(graded[PROBABILITY_COLUMNS].astype(float),
                               evaluated[PROBABILITY_COLUMNS], atol=1e-5)
    assert (graded["predicted"].astype(int) == evaluated["predicted"]).all()
    bad = frame.set_index(frame["image"].str.rsplit("/", n=1).str[-1])
    assert "not an image" in bad.loc["notes.txt", "error"]
    assert "truncated" in bad.loc["zz_truncated.jpeg", "error"]
    assert bad.loc["notes.txt", "predicted"] == ""
    dark = bad.loc["zz_dark.jpeg"]  # read, but too dark to grade: no grade, no flag, a reason
    assert (dark["gradable"], dark["quality_reason"], dark["error"]) == ("False", "under-exposed",
                                                                         "")
    assert dark["predicted"] == dark["p_referable"] == dark["referable"] == ""
    assert "Skipped" in caplog.text and "center_crop at 64 px" in caplog.text
    assert "1 not gradable" in caplog.text


def test_a_run_id_grades_a_csv_of_paths_with_activation_overlays(trained_run, tmp_path,
                                                                 monkeypatch):
    run_dir, run_id, uri, source, _ = trained_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    evaluated = read_predictions(run_dir / "predictions_test.csv")
    names = list(evaluated["image"][:3])
    listing = tmp_path / "list.csv"
    listing.write_text("path,clinic\n" + "".join(
        f"{source / 'train' / (name + '.jpeg')},north\n" for name in names))
    out = tmp_path / "by_id.csv"
    assert main([run_id, str(listing), "--out", str(out), "--cam", str(tmp_path / "cams")]) == 0
    frame = pd.read_csv(out)
    np.testing.assert_allclose(frame[PROBABILITY_COLUMNS],
                               evaluated[PROBABILITY_COLUMNS][:3], atol=1e-5)
    assert set(frame["referable"]) <= {0, 1}
    assert sorted(p.name for p in (tmp_path / "cams").iterdir()) == \
        sorted(f"{name}_cam.png" for name in names)


def test_a_run_that_is_not_there_is_a_clear_error(tmp_path, capsys):
    assert main(["0123456789abcdef", str(tmp_path), "--out", str(tmp_path / "p.csv")]) == 2
    assert "neither a folder nor a run" in capsys.readouterr().err


def test_a_run_without_a_trained_model_is_a_clear_error(tmp_path, capsys, monkeypatch):
    """A study's parent run (or a failed run) has no config.yaml nor weights: exit 2, no
    traceback, and no temporary folder left for the weights it did not find."""
    import tempfile

    from retino.tracking.runs import start_parent_run

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    parent = start_parent_run("retino", "a-study", {"study": "a-study"})
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert main([parent, str(tmp_path), "--out", str(tmp_path / "p.csv")]) == 2
    assert "holds no trained model" in capsys.readouterr().err
    assert [path.name for path in scratch.iterdir()] == []


def test_test_time_flips_average_four_passes_and_predict_matches_the_evaluation(trained_run,
                                                                                tmp_path):
    """tta=flips: the probabilities are the mean of the four flipped passes, and predict on the
    raw photographs gives what the run's own evaluation gives on its cache with flips."""
    import torch
    from omegaconf import OmegaConf

    from retino.data.layout import read_split_index
    from retino.data.load.loaders import evaluation_loader
    from retino.models.answers import head_answers
    from retino.serving.grader import grade, load_trained_run, trained_model
    from retino.training.loop import score_split

    run_dir, _, _, source, cache = trained_run
    model = trained_model(load_trained_run(str(run_dir)), torch.device("cpu"))
    images = torch.randn(3, 3, 64, 64)
    with torch.inference_mode():
        passes = [model(images.flip(d) if d else images).softmax(dim=1)
                  for d in ((), (3,), (2,), (2, 3))]
        flipped = head_answers(model, images, tta=True)
        assert torch.allclose(flipped, torch.stack(passes).mean(dim=0), atol=1e-6)
        assert not torch.allclose(flipped, passes[0], atol=1e-4)  # it changes something
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("model", "*.pt"))
    shutil.copy(run_dir / "model_state.pt", copy / "model_state.pt")
    cfg = OmegaConf.load(copy / "config.yaml")
    cfg.tta = "flips"
    OmegaConf.save(cfg, copy / "config.yaml")
    test = read_split_index(cache, cache / "images", "test")
    loader = evaluation_loader(test, cfg.resolution.size, 8, 0)
    evaluated = score_split(model, loader, torch.device("cpu"), tta=True).set_index("image")
    photos = [source / "train" / f"{name}.jpeg" for name in evaluated.index]
    graded = grade(load_trained_run(str(copy)), photos, torch.device("cpu"))
    np.testing.assert_allclose(graded[PROBABILITY_COLUMNS].to_numpy(float),
                               evaluated[PROBABILITY_COLUMNS].to_numpy(), atol=1e-5)


def test_bad_arguments_are_refused_before_any_grading(tmp_path, capsys):
    """--batch-size 0 and --workers abc gave tracebacks; a missing --out folder failed after
    every photograph was graded."""

    for option, value in (("--batch-size", "0"), ("--workers", "abc"), ("--workers", "-1")):
        with pytest.raises(SystemExit) as stopped:
            main(["some-run", str(tmp_path), option, value])
        assert stopped.value.code == 2
        assert f"argument {option}" in capsys.readouterr().err
    missing = tmp_path / "no" / "such" / "folder" / "p.csv"
    assert main(["0123456789abcdef", str(tmp_path), "--out", str(missing)]) == 2
    error = capsys.readouterr().err
    assert f"--out: the folder {missing.parent} does not exist" in error


def test_one_photograph_subfolders_and_predicts_own_outputs(trained_run, tmp_path):
    """A single .jpeg as IMAGES was read as a CSV (UnicodeDecodeError); two photographs of one
    name in two subfolders shared one overlay; the CSV and overlays written inside IMAGES were
    graded on the next run."""
    run_dir, _, _, source, _ = trained_run
    name = read_predictions(run_dir / "predictions_test.csv")["image"][0]
    photograph = source / "train" / f"{name}.jpeg"
    clinic = tmp_path / "clinic"
    for eye in ("north", "south"):
        (clinic / eye).mkdir(parents=True)
        shutil.copy(photograph, clinic / eye / "same.jpeg")
    single = tmp_path / "one.csv"
    assert main([str(run_dir), str(photograph), "--out", str(single)]) == 0
    assert pd.read_csv(single)["image"].tolist() == [str(photograph)]
    out, cams = clinic / "predictions.csv", clinic / "cams"
    for _ in range(2):  # the second run finds the first one's outputs inside IMAGES
        assert main([str(run_dir), str(clinic), "--out", str(out), "--cam", str(cams)]) == 0
        assert len(pd.read_csv(out)) == 2
    assert sorted(p.name for p in cams.iterdir()) == ["north__same_cam.png",
                                                      "south__same_cam.png"]


def giant_png(path, side):
    """A side x side black RGB PNG, written row by row (never held whole): 1 MB on disk at
    20000 px, 1.2 GB decoded."""
    import struct
    import zlib

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    packer = zlib.compressobj(1)
    row = bytes(1 + 3 * side)  # a filter byte and the row's pixels
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n"
                + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)))
        for _ in range(side):
            if data := packer.compress(row):
                f.write(chunk(b"IDAT", data))
        f.write(chunk(b"IDAT", packer.flush()) + chunk(b"IEND", b""))


# python -c PEAK_MEMORY <run> <folder>...: grades each folder in turn (its answers in
# <folder>/p.csv) and prints the process's peak memory in MB after each
PEAK_MEMORY = """
import resource, sys
from retino.predict import main
run, *folders = sys.argv[1:]
for folder in folders:
    main([run, folder, "--out", folder + "/p.csv", "--workers", "0"])
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


@pytest.mark.slow(seconds=8)
def test_a_20000_pixel_photograph_is_refused_from_its_header_not_decoded(trained_run, tmp_path):
    """A 1 MB PNG of 20000 x 20000 px took predict from 0.96 to 3.2 GB. Its size is read from
    the header and it is refused by name; the process's peak memory is that of grading one
    ordinary photograph."""
    import subprocess
    import sys

    from retino import PROJECT_ROOT

    run_dir, _, _, source, _ = trained_run

    ordinary, giant = tmp_path / "ordinary", tmp_path / "giant"
    ordinary.mkdir(), giant.mkdir()
    name = read_predictions(run_dir / "predictions_test.csv")["image"][0]
    shutil.copy(source / "train" / f"{name}.jpeg", ordinary)
    giant_png(giant / "giant.png", 20000)
    # one process grades the ordinary photograph, then the giant: the peak may not grow
    proc = subprocess.run([sys.executable, "-c", PEAK_MEMORY, str(run_dir), str(ordinary),
                           str(giant)], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    baseline, peak = map(int, proc.stdout.split()[-2:])
    frame = pd.read_csv(giant / "p.csv", keep_default_na=False)
    assert frame["error"][0] == "too large: 400 megapixels, above max_megapixels=50"
    assert peak < baseline + 150, (peak, baseline)


def test_predict_by_run_id_leaves_no_downloads_behind(trained_run, tmp_path, monkeypatch):
    """Each predict by run id left three temp folders, one with a copy of the weights, until
    its process exited; a notebook or a server grading by run id kept them all. What it
    downloads is gone when it returns."""
    import tempfile

    _, run_id, uri, source, _ = trained_run
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    photographs = tmp_path / "photographs"
    photographs.mkdir()
    shutil.copy(next((source / "train").glob("*.jpeg")), photographs)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where mkdtemp and the rest write
    assert main([run_id, str(photographs), "--out", str(tmp_path / "p.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "p.csv")) == 1
    assert [p.name for p in scratch.iterdir()] == []


def test_an_empty_file_and_a_one_pixel_image_are_listed_with_their_reasons(trained_run,
                                                                          tmp_path):
    """OpenCV's assertion text was the reason given for both."""
    run_dir = trained_run[0]
    folder = tmp_path / "clinic"
    folder.mkdir()
    (folder / "empty.jpeg").write_bytes(b"")
    cv2.imwrite(str(folder / "dot.png"), np.zeros((1, 1, 3), np.uint8))
    out = tmp_path / "p.csv"
    assert main([str(run_dir), str(folder), "--out", str(out)]) == 3
    errors = pd.read_csv(out, keep_default_na=False).set_index("image")["error"]
    assert errors[str(folder / "empty.jpeg")] == "empty file (0 bytes)"
    assert errors[str(folder / "dot.png")] == "too small to be a photograph: 1x1 px"
