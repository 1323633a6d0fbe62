"""A study a reviewer takes home: exported from the author's store into one zip, refused when a
file in it changed or the code is not the author's, reproduced in another checkout with another
store (a verdict per configuration), and imported into a third store, where its report is
rebuilt as the author's."""

import csv
import hashlib
import json
import logging
import os
import subprocess
import sys
import zipfile

import pytest
from mlflow.tracking import MlflowClient

from retino.bundle import main as bundle_main
from retino.core.errors import BundleError
from retino.core.names import BUNDLE_TAG, IMPORTED_FROM_TAG, PARENT_TAG
from retino.reproduce import main as reproduce_main
from retino.studies.bundle import (
    FORMAT,
    MANIFEST,
    bundle_id,
    bundled_artifacts,
    imported_tags,
    open_bundle,
)
from retino.studies.report import write_report
from retino.tracking.records import read_runs
from tests.conftest import TINY
from tests.test_job import copy_of_the_code
from tests.test_run_cli import experiment_runs, run_cli


def reviewer(code, store, *args):
    """python -m retino.reproduce in another checkout (code) with another store."""
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{store}", PYTHONPATH=str(code))
    return subprocess.run([sys.executable, "-m", "retino.reproduce", *map(str, args)], cwd=code,
                          env=env, capture_output=True, text=True, timeout=600)


def tampered(bundle, member, folder):
    """A copy of the bundle with one file's bytes changed, the manifest left as exported."""
    copy = folder / "tampered.zip"
    with zipfile.ZipFile(bundle) as source, zipfile.ZipFile(copy, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            target.writestr(item, data.replace(b"1", b"2", 1) if item.filename == member else data)
    return copy


def without_run_ids(text):
    return "\n".join(line for line in text.splitlines() if "best seed's run" not in line)


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


@pytest.mark.slow
def test_a_bundled_study_is_refused_when_changed_reproduced_elsewhere_and_imported(
        tmp_path, monkeypatch, capsys, caplog):
    args = ["-m", "lr=0.001,0.002", *TINY, "deterministic=true", f"data.root={tmp_path / 'd'}"]
    assert run_cli(args, tmp_path).returncode == 0
    _, runs = experiment_runs()
    [study] = [run for run in runs if PARENT_TAG not in run.data.tags]
    authors = {run.info.run_id: run for run in runs if run is not study}
    bundle = tmp_path / "study.zip"
    assert bundle_main(["export", study.info.run_id, "--out", str(bundle)]) == 0
    printed = capsys.readouterr().out
    assert f"Wrote {bundle}: bundle " in printed and ", 2 runs, " in printed and " MB" in printed
    names = zipfile.ZipFile(bundle).namelist()
    assert not [name for name in names if name.endswith((".pt", ".jpeg", ".jpg", "MLmodel"))]
    assert any(name.endswith("/test_label.csv") for name in names)  # the data's identity

    # A changed file is named, and nothing runs.
    member = next(name for name in names if name.endswith("predictions_test.csv"))
    with caplog.at_level(logging.ERROR):
        assert reproduce_main([str(tampered(bundle, member, tmp_path))]) == 2
    assert f"{member} was changed after the bundle was made" in caplog.text
    # Other data than the author's (another demo seed): refused, naming the files that differ.
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert reproduce_main([str(bundle), f"data.root={tmp_path / 'd'}", "data.seed=7"]) == 2
    assert "is not the data run" in caplog.text and "train_label.csv" in caplog.text
    assert "--allow-data-change" in caplog.text

    # Another checkout, another store: every run again, each configuration identical.
    code = copy_of_the_code(tmp_path / "reviewer")
    store = tmp_path / "reviewer.db"
    proc = reviewer(code, store, bundle, f"data.root={tmp_path / 'reviewer-data'}",
                    f"hydra.sweep.dir={tmp_path / 'again'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for run_id in authors:
        assert f"(the author's run {run_id}): identical" in proc.stdout
    rows = list(csv.DictReader((tmp_path / "again" / "report" / "reproduction.csv").open()))
    assert sorted({row["original run"] for row in rows}) == sorted(authors)
    assert {row["verdict"] for row in rows} == {"identical"} and len(rows) == 6

    # The reviewer's code differs from the author's: refused, naming the commit to check out.
    (code / "retino" / "training" / "loop.py").open("a").write("# a reviewer's change\n")
    proc = reviewer(code, store, bundle, f"data.root={tmp_path / 'reviewer-data'}")
    commit = study.data.tags["git_commit"].removesuffix("-dirty")
    assert proc.returncode == 2 and f"git checkout {commit}" in proc.stderr
    assert "--allow-code-change" in proc.stderr

    # Imported into a third store without running: the author's report, rebuilt.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'third.db'}")
    assert bundle_main(["import", str(bundle)]) == 0
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    imported = client.search_runs([client.get_experiment_by_name("retino").experiment_id])
    assert sorted(run.data.tags[IMPORTED_FROM_TAG] for run in imported) == sorted(
        [study.info.run_id, *authors])
    [parent] = [run for run in imported if PARENT_TAG not in run.data.tags]
    assert parent.data.tags[BUNDLE_TAG] and parent.info.status == "FINISHED"
    files = write_report(read_runs(parent_id=parent.info.run_id), tmp_path / "rebuilt",
                         "rebuilt")
    assert files
    authors_report = (tmp_path / "multirun" / "report" / "results.md").read_text()
    rebuilt = (tmp_path / "rebuilt" / "results.md").read_text()
    assert without_run_ids(rebuilt.split("\n", 1)[1]) == \
        without_run_ids(authors_report.split("\n", 1)[1])
