"""A study bundle read back: what is refused before anything in it is used, what an export holds
and what an import keeps. The whole round trip (export, reproduce elsewhere, import) is
tests/end_to_end/test_run_cli.py's study-reproduction test."""

import hashlib
import json
import zipfile

import pytest

from retino.core.errors import BundleError
from retino.studies.study_bundle import (
    FORMAT,
    MANIFEST,
    bundle_id,
    bundled_artifacts,
    imported_tags,
    open_bundle,
)

STUDY, RUN = "a" * 32, "b" * 32


def run_json(run_id, status="FINISHED"):
    return json.dumps({"run_id": run_id, "name": "r", "experiment": "retino", "status": status,
                       "start_time": 1, "end_time": 2, "params": {"lr": "0.1"},
                       "tags": {"config_hash": "c"}, "metrics": {"test_acc": [[1, 0.5, 3]]}})


def zipped(folder, files, members=None, study=STUDY):
    """A bundle as export writes one, of these files (name -> bytes); members (name, bytes)
    are what the zip holds instead, when given: a bundle someone changed."""
    checksums = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    manifest = {"format": FORMAT, "bundle_id": bundle_id(checksums), "study": {"run_id": study},
                "files": {name: {"sha256": checksums[name], "bytes": len(data)}
                          for name, data in files.items()}}
    path = folder / "bundle.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(MANIFEST, json.dumps(manifest))
        for name, data in members or files.items():
            archive.writestr(name, data)
    return path


def good_files():
    return {"study/run.json": run_json(STUDY).encode(),
            f"runs/{RUN}/run.json": run_json(RUN).encode(),
            f"runs/{RUN}/artifacts/config.yaml": b"lr: 0.1\n"}


def refused(tmp_path, path, match):
    with pytest.raises(BundleError, match=match):
        open_bundle(path, tmp_path / "unpacked")


def test_a_bundle_opens_with_its_study_and_runs(tmp_path):
    bundle = open_bundle(zipped(tmp_path, good_files()), tmp_path / "unpacked")
    assert bundle.study.run_id == STUDY and [run.run_id for run in bundle.runs] == [RUN]
    assert bundle.config(bundle.runs[0]).read_text() == "lr: 0.1\n"
    assert len(bundle.bundle_id) == 64  # the whole SHA-256: a quoted id pins the evidence


def test_a_run_whose_id_is_not_its_folder_is_refused(tmp_path):
    """run.json's id builds the paths an import reads: '../../x' read outside the bundle."""
    files = good_files() | {f"runs/{RUN}/run.json": run_json("../../../outside").encode()}
    refused(tmp_path, zipped(tmp_path, files), "is not the run its place names")


@pytest.mark.parametrize("name", ["runs/../../x", "/etc/x", "runs/./x", "runs//x"])
def test_a_name_outside_the_bundle_or_not_normal_is_refused(tmp_path, name):
    refused(tmp_path, zipped(tmp_path, good_files() | {name: b"x"}), "outside the bundle")


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_two_members_of_one_name_are_refused(tmp_path):
    files = good_files()
    members = [*files.items(), ("study/run.json", files["study/run.json"])]
    refused(tmp_path, zipped(tmp_path, files, members), "two files of one name")


def test_a_damaged_run_file_is_refused_with_a_message_not_a_traceback(tmp_path):
    files = good_files() | {f"runs/{RUN}/run.json": b"{not json"}
    refused(tmp_path, zipped(tmp_path, files), "is damaged")
    still_running = good_files() | {"study/run.json": run_json(STUDY, "RUNNING").encode()}
    refused(tmp_path, zipped(tmp_path, still_running), "RUNNING")


def test_a_bundle_leaves_out_photographs_models_and_weights_unless_asked():
    names = ["config.yaml", "model", "ensemble_model-2", "last.pt", "model_state.pt",
             "class_activation_maps.png", "report.html", "predictions_test.csv"]
    assert bundled_artifacts(names, weights=False, photographs=False) == [
        "config.yaml", "predictions_test.csv"]
    assert bundled_artifacts(names, weights=True, photographs=True) == [
        "config.yaml", "model_state.pt", "class_activation_maps.png", "report.html",
        "predictions_test.csv"]
    assert "report.html" in bundled_artifacts(["report.html"], False, False)  # no maps in it


def test_an_imported_run_keeps_what_it_was_not_where_it_was():
    tags = {"config_hash": "c", "code_version": "v", "mlflow.note.content": "headline",
            "mlflow.parentRunId": "p", "in_study.0123": "true", "reproduces": "r",
            "superseded_by": "s", "mlflow.user": "author"}
    assert imported_tags(tags) == {"config_hash": "c", "code_version": "v",
                                   "mlflow.note.content": "headline"}
