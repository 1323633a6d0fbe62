"""python -m retino.export: ONNX and TorchScript files that answer as the run's PyTorch model does
(on its real test images, at two batch sizes), carry their metadata, and refuse to be kept when
they do not."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from retino.core.errors import ConfigError
from retino.core.grades import PROBABILITY_COLUMNS
from retino.core.names import CONFIG_FILE, WEIGHTS_FILE, predictions_file
from retino.data.load.dataset import _statistics
from retino.export import REFUSED, main
from retino.models import build_model
from retino.serving.grader import load_trained_run
from retino.serving.portable import (
    ExportMismatch,
    OnnxEngine,
    check_export,
    check_images,
    export_run,
    exported_grader,
    pytorch_answers,
    read_onnx_metadata,
    read_torchscript_metadata,
    run_exported,
)

onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def onnx_file(trained_run, tmp_path_factory) -> Path:
    """The session's trained run exported once as ONNX, for the tests that only read it."""
    out = tmp_path_factory.mktemp("export") / "grader.onnx"
    # As in a fresh `python -m retino.export`: no batch normalised yet in this process (the
    # exporter once traced normalize_images' cached statistics, and broke them for the check)
    _statistics.cache_clear()
    export_run(load_trained_run(str(trained_run[0])), "onnx", out)
    return out


def _real_batches(run) -> list[torch.Tensor]:
    images, described = check_images(run)
    assert "test images" in described  # the run's own, not the random fallback
    return [images[:3], images]  # two batch sizes, neither the exported example's 2


def assert_answers_as_the_model(path: Path, fmt: str, run) -> None:
    model, own_answers = exported_grader(run), pytorch_answers(run)
    for batch in _real_batches(run):
        with torch.inference_mode():
            expected = [out.numpy() for out in model(batch)]
        # the wrapper's answers are predict's (normalisation, head, flips)
        for wrapped, own in zip(expected, own_answers(batch), strict=True):
            np.testing.assert_allclose(wrapped, own, atol=1e-6, rtol=0)
        got = run_exported(path, fmt, batch)
        assert [g.shape[0] for g in got] == [len(batch)] * len(expected)
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(g, e, atol=1e-4, rtol=0)


def test_onnx_answers_as_the_model_on_real_images_and_says_its_layout(trained_run, onnx_file):
    run = load_trained_run(str(trained_run[0]))
    assert_answers_as_the_model(onnx_file, "onnx", run)
    model = onnx.load(str(onnx_file))
    onnx.checker.check_model(model, full_check=True)
    meta = read_onnx_metadata(onnx_file)
    assert meta["input_layout"] == "NCHW" and meta["input_dtype"] == "uint8"
    assert json.loads(meta["outputs"]) == ["probabilities", "p_referable"]
    assert meta["resolution"] == "64" and meta["model"] == "resnet18"
    assert float(meta["threshold"]) == pytest.approx(run.threshold)
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value  # a named, dynamic batch axis


def test_torchscript_answers_as_the_model_and_carries_its_metadata(trained_run, tmp_path):
    run = load_trained_run(str(trained_run[0]))
    done = export_run(run, "torchscript", tmp_path / "grader.pt")
    assert done.check.batch_sizes == (1, 6) and done.check.max_difference <= 1e-4
    assert_answers_as_the_model(tmp_path / "grader.pt", "torchscript", run)
    meta = read_torchscript_metadata(tmp_path / "grader.pt")
    assert meta["input_layout"] == "NCHW" and json.loads(meta["outputs"])[1] == "p_referable"


def _regression_run(trained_run, folder: Path) -> Path:
    """The session's run folder, its model replaced by a real resnet18 with a regression head
    (weights as built: the export must match whatever they are), with test-time flips."""
    shutil.copytree(trained_run[0], folder)
    cfg = OmegaConf.load(folder / CONFIG_FILE)
    cfg.head = {"name": "regression", "loss": "mse"}
    cfg.tta = "flips"
    OmegaConf.save(cfg, folder / CONFIG_FILE)
    torch.manual_seed(0)
    torch.save(build_model("resnet18", head="regression").state_dict(), folder / WEIGHTS_FILE)
    (folder / predictions_file("val")).unlink()  # a classifier's: no cut points from it
    return folder


def test_a_regression_run_exports_its_output_with_flips_and_its_cut_points(trained_run,
                                                                          tmp_path):
    run = load_trained_run(str(_regression_run(trained_run, tmp_path / "regression")))
    assert run.regression and run.cfg.tta == "flips"
    # TorchScript: the same wrapper as ONNX, exported in a second rather than ten
    done = export_run(run, "torchscript", tmp_path / "regression.pt")
    # the self-check: the file against predict's PyTorch path (with its flips), on the run's
    # test images, at two batch sizes
    assert done.check.max_difference <= 1e-4 and "test images" in done.check.images
    assert run_exported(tmp_path / "regression.pt", "torchscript",
                        check_images(run)[0][:3])[0].shape == (3, 1)
    meta = read_torchscript_metadata(tmp_path / "regression.pt")
    assert json.loads(meta["outputs"]) == ["output"] and meta["tta"] == "flips"
    assert json.loads(meta["cut_points"]) == [0.5, 1.5, 2.5, 3.5]  # rounding: no validation


def test_a_tampered_file_is_refused(trained_run, onnx_file, tmp_path):
    run = load_trained_run(str(trained_run[0]))
    model = onnx.load(str(onnx_file))
    bias = next(t for t in model.graph.initializer if tuple(t.dims) == (5,))  # the head's bias
    values = onnx.numpy_helper.to_array(bias) + np.array([0, 0, 0.5, 0, 0], np.float32)
    bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))
    onnx.save(model, str(tmp_path / "tampered.onnx"))
    images, described = check_images(run)
    with pytest.raises(ExportMismatch, match="above the tolerance"):
        check_export(tmp_path / "tampered.onnx", "onnx", pytorch_answers(run), images,
                     described, 1e-4)


@pytest.mark.slow
def test_the_command_refuses_above_the_tolerance_and_keeps_no_file(trained_run, tmp_path,
                                                                   capsys):
    out = tmp_path / "exports" / "grader.onnx"
    assert main([str(trained_run[0]), "--out", str(out), "--tolerance", "0"]) == REFUSED
    assert not list(out.parent.iterdir())  # neither the file nor a partial one
    assert "refused" in capsys.readouterr().err


def test_a_bad_run_is_a_clear_error(tmp_path, capsys):
    assert main(["no-such-run", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "neither a folder nor a run" in capsys.readouterr().err


def test_without_onnxruntime_the_error_says_what_to_install(trained_run, onnx_file,
                                                           monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now fails
    with pytest.raises(ConfigError, match="pip install -r requirements-export.txt"):
        OnnxEngine(onnx_file)
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert main([str(trained_run[0]), "--out", str(onnx_file.parent / "no.onnx")]) == 2
    assert "pip install -r requirements-export.txt" in capsys.readouterr().err


def test_predict_with_the_onnx_file_equals_predict_with_pytorch(trained_run, onnx_file,
                                                                tmp_path):
    from retino.evaluation.predictions import read_predictions
    from retino.predict import main as predict
    from tests.helpers.sources import clinic_folder

    run_dir, _, _, source, _ = trained_run
    names = list(read_predictions(run_dir / "predictions_test.csv")["image"])
    clinic = clinic_folder(tmp_path, source, names)  # and an unreadable, a truncated, a dark one
    frames = {}
    for engine in (["torch"], ["onnx", str(onnx_file)]):
        out = tmp_path / f"{engine[0]}.csv"
        assert predict([str(run_dir), str(clinic), "--out", str(out), "--engine", *engine]) == 3
        frames[engine[0]] = pd.read_csv(out, keep_default_na=False)
    torch_frame, onnx_frame = frames["torch"], frames["onnx"]
    assert list(onnx_frame.columns) == list(torch_frame.columns)
    numbers = [*PROBABILITY_COLUMNS, "p_referable"]
    graded = torch_frame["predicted"] != ""
    assert graded.sum() == len(names)
    np.testing.assert_allclose(onnx_frame.loc[graded, numbers].astype(float),
                               torch_frame.loc[graded, numbers].astype(float), atol=1e-4, rtol=0)
    rest = [c for c in torch_frame.columns if c not in numbers]
    pd.testing.assert_frame_equal(onnx_frame[rest], torch_frame[rest])  # grades, flags, errors


def test_predict_refuses_an_onnx_file_of_another_kind_of_run(trained_run, onnx_file, tmp_path,
                                                             capsys):
    from retino.predict import main as predict

    model = onnx.load(str(onnx_file))
    next(p for p in model.metadata_props if p.key == "resolution").value = "224"
    onnx.save(model, str(tmp_path / "other.onnx"))
    assert predict([str(trained_run[0]), str(trained_run[3] / "train"), "--engine", "onnx",
                    str(tmp_path / "other.onnx")]) == 2
    assert "resolution is '224' in the file, '64' in the run" in capsys.readouterr().err
