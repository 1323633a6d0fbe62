"""A study a reviewer takes home: exported from the author's store into one zip, refused when a
file in it changed or the code is not the author's, reproduced in another checkout with another
store (a verdict per configuration), and imported into a third store, where its report is
rebuilt as the author's."""

import csv
import logging
import os
import subprocess
import sys
import zipfile

import pytest
from mlflow.tracking import MlflowClient

from retino.bundle import main as bundle_main
from retino.core.names import BUNDLE_TAG, IMPORTED_FROM_TAG, PARENT_TAG
from retino.reproduce import main as reproduce_main
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
