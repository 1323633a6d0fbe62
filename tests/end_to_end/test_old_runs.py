"""Runs, studies and MLflow models made by the code before the move to stage subpackages still
work with the code after it: one study is trained by the old code (extracted from git, run as a
user ran it), then the new code reports on it, grades photographs with it and serves its model."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from retino import PROJECT_ROOT

pytestmark = pytest.mark.slow

# The last commit of the flat layout (retino/*.py, before retino/ was regrouped by stage).
PRE_MOVE_COMMIT = "e8b99f2"

# The store's own tag names, as the old code wrote them (literal on purpose: they are the contract
# between the old runs and the new code, whatever the new code calls them).
STUDY_TAG = "study"
PARENT_TAG = "mlflow.parentRunId"
PHOTOGRAPHS = 3  # graded by predict: a few of the old study's demo test images


@dataclass(frozen=True)
class OldStudy:
    uri: str  # the MLflow store the old code wrote (sqlite:///<tmp>/mlflow.db)
    parent_id: str  # the study's parent run
    child_id: str  # its one run
    child_name: str  # the run's configuration label, e.g. resnet18-scratch-64px
    report_dir: Path  # the report the old sweep wrote at its end
    photographs: Path  # a folder of a few of the run's demo test photographs
    old_predictions: dict[str, list[float]]  # the old run's p0..p4 per test image (by stem)


def extract_pre_move_code(target: Path) -> Path:
    """The tree of PRE_MOVE_COMMIT, written to target (git archive | tar -x)."""
    known = subprocess.run(["git", "-C", str(PROJECT_ROOT), "cat-file", "-e",
                            f"{PRE_MOVE_COMMIT}^{{commit}}"], capture_output=True, text=True)
    if known.returncode != 0:
        pytest.fail(f"Commit {PRE_MOVE_COMMIT} (the last of the flat layout, which these tests "
                    f"train an old study with) is not in the git history of {PROJECT_ROOT}: "
                    f"{known.stderr.strip() or 'not a git checkout'}. In a shallow clone run "
                    "`git fetch --unshallow` (in CI: actions/checkout with fetch-depth: 0).",
                    pytrace=False)
    target.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(PROJECT_ROOT), "archive", PRE_MOVE_COMMIT],
                             capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")
    return target


def read_probabilities(path: Path) -> dict[str, list[float]]:
    with path.open(newline="") as f:
        return {Path(row["image"]).stem: [float(row[f"p{g}"]) for g in range(5)]
                for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def old_study(tmp_path_factory: pytest.TempPathFactory, empty_store: Path
              ) -> Iterator[OldStudy]:
    """A one-job study (the smoke preset, with its MLflow model) trained by the pre-move code's
    run.py in a subprocess, in a store of its own; its ids read back from that store."""
    root = tmp_path_factory.mktemp("old-study")
    old = extract_pre_move_code(root / "old")
    shutil.copy(empty_store, root / "mlflow.db")  # tables made once (conftest.empty_store)
    uri = f"sqlite:///{root / 'mlflow.db'}"  # the old store puts artifacts in root/mlruns
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # old code only
    env.update(MLFLOW_TRACKING_URI=uri, RETINO_LOCK_DIR=str(root / "locks"),
               TORCH_HOME=str(root / "torch_home"), HYDRA_FULL_ERROR="1",
               MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
    proc = subprocess.run([sys.executable, "run.py", "-m", "+preset=smoke", "log_model=true",
                           f"data.root={root / 'demo'}", f"hydra.sweep.dir={root / 'multirun'}"],
                          cwd=old, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("retino").experiment_id])
    [parent] = [run for run in runs if STUDY_TAG in run.data.tags]
    [child] = [run for run in runs if run.data.tags.get(PARENT_TAG) == parent.info.run_id]
    assert parent.info.status == child.info.status == "FINISHED"
    artifacts = root / "artifacts"
    model_code = client.download_artifacts(child.info.run_id, "model/code/retino", str(artifacts))
    # The old code really ran: its model carries the flat package (retino/served.py).
    assert (Path(model_code) / "served.py").is_file()
    old_predictions = read_probabilities(Path(client.download_artifacts(
        child.info.run_id, "predictions_test.csv", str(artifacts))))

    [demo] = (root / "demo").glob("*/images")  # the demo folder the old run generated
    photographs = root / "photographs"
    photographs.mkdir()
    for path in sorted(p for p in demo.iterdir() if p.stem in old_predictions)[:PHOTOGRAPHS]:
        shutil.copy(path, photographs)
    assert len(list(photographs.iterdir())) == PHOTOGRAPHS
    yield OldStudy(uri, parent.info.run_id, child.info.run_id, child.info.run_name,
                   root / "multirun" / "report", photographs, old_predictions)
    shutil.rmtree(root, ignore_errors=True)  # 350 MB: the old checkout, its study, its model


def assert_same_probabilities(graded: list[tuple[dict, str]], old: dict[str, list[float]]) -> None:
    """Each graded photograph's p0..p4 equal the old run's own test predictions for it."""
    for row, stem in graded:
        assert not row["error"], row
        assert int(row["predicted"]) in range(5), row
        assert [float(row[f"p{g}"]) for g in range(5)] == pytest.approx(old[stem], abs=1e-4), stem


# Columns renamed on purpose since: the headline sensitivity says which photographs it counts.
RENAMED = {f"referable {rate} % (selected, at operating point)":
           f"referable {rate} % (selected, at operating point, all photographs)"
           for rate in ("sensitivity", "specificity")} | {
           "referable AUC (selected)": "referable AUC (selected, all photographs)"}


def test_new_report_rebuilds_an_old_study(old_study: OldStudy, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from retino.report import main as report_main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", old_study.uri)
    out = tmp_path / "report"
    assert report_main(["--parent", old_study.parent_id, "--out", str(out)]) == 0
    text = (out / "results.md").read_text()
    assert text.startswith("# sweep: 1 runs")  # the old study's name (its `study` tag)
    assert f"| {old_study.child_name} | 1 |" in text  # the old run's configuration, one run
    # Every number the old sweep reported at its end, computed again by the new code from the
    # old run's predictions files (columns the new report may add aside). Changed on purpose
    # since: `n` is called `seeds`, a grade the test set lacks has no recall (nan, not 0), and
    # an interval may say why it is missing (an AUC with under 10 referable patients): so the
    # estimates are compared, not the interval text.
    with (old_study.report_dir / "results.csv").open(newline="") as f:
        [before] = list(csv.DictReader(f))
    with (out / "results.csv").open(newline="") as f:
        [after] = list(csv.DictReader(f))
    assert after["seeds"] == before.pop("n")
    for old, new in RENAMED.items():
        before[new] = before.pop(old)
    kept = [column for column in before if not column.startswith("recall grade")]
    def estimates(row: dict[str, str]) -> dict[str, str]:
        return {column: (row.get(column) or "").split(" [")[0] for column in kept}
    assert estimates(after) == estimates(before)


def test_new_predict_grades_with_an_old_run(old_study: OldStudy, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from retino.predict import main as predict_main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", old_study.uri)
    out = tmp_path / "predictions.csv"
    assert predict_main([old_study.child_id, str(old_study.photographs), "--out", str(out),
                         "--device", "cpu", "--workers", "0"]) == 0
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    photographs = sorted(old_study.photographs.iterdir())
    assert sorted(Path(row["image"]).name for row in rows) == [p.name for p in photographs]
    assert_same_probabilities([(row, Path(row["image"]).stem) for row in rows],
                              old_study.old_predictions)


# A fresh Python that grades one photograph with an MLflow model: prints the output frame and
# where the retino package it ran came from. argv: model URI, photograph.
SERVE = textwrap.dedent("""
    import base64, json, sys
    import mlflow.pyfunc
    import pandas as pd
    model = mlflow.pyfunc.load_model(sys.argv[1])
    cell = base64.b64encode(open(sys.argv[2], "rb").read()).decode("ascii")
    frame = model.predict(pd.DataFrame({"image": [cell]}))
    print(json.dumps({"frame": frame.to_dict(orient="records"),
                      "retino": sys.modules["retino"].__file__}))
""")


def serve_old_model(old_study: OldStudy) -> tuple[subprocess.CompletedProcess, Path]:
    photograph = sorted(old_study.photographs.iterdir())[0]
    env = dict(os.environ, MLFLOW_TRACKING_URI=old_study.uri, PYTHONPATH=str(PROJECT_ROOT),
               MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
    proc = subprocess.run([sys.executable, "-c", SERVE, f"runs:/{old_study.child_id}/model",
                           str(photograph)], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    return proc, photograph


def test_old_mlflow_model_loads_and_grades_in_a_fresh_python(old_study: OldStudy) -> None:
    """As `mlflow models serve` or a notebook loads it: nothing of retino imported first. MLflow
    puts the model's own code (the old flat retino/) first on sys.path, so the pickled
    retino.served.FundusGrader is found there, and the old model grades with the code it was
    saved with, whatever retino the environment holds."""
    proc, photograph = serve_old_model(old_study)
    assert proc.returncode == 0, proc.stderr[-4000:]
    served = json.loads(proc.stdout.strip().splitlines()[-1])
    [row] = served["frame"]
    assert "predicted" in row
    assert_same_probabilities([(row, photograph.stem)], old_study.old_predictions)


def test_old_mlflow_model_loads_where_the_new_retino_is_imported(
        old_study: OldStudy, monkeypatch: pytest.MonkeyPatch) -> None:
    """A service or notebook that already uses the new retino (this process), then loads an old
    model: retino is in sys.modules, so MLflow's prepended code path is never consulted, and the
    pickled retino.served.FundusGrader is found through the compatibility alias
    (retino/served.py)."""
    import base64

    import mlflow.pyfunc
    import pandas as pd

    import retino.serving.pyfunc  # noqa: F401 - the new package, imported first

    monkeypatch.setenv("MLFLOW_TRACKING_URI", old_study.uri)
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_model prepends the model's code
    model = mlflow.pyfunc.load_model(f"runs:/{old_study.child_id}/model")
    photograph = sorted(old_study.photographs.iterdir())[0]
    cell = base64.b64encode(photograph.read_bytes()).decode("ascii")
    [row] = model.predict(pd.DataFrame({"image": [cell]})).to_dict(orient="records")
    assert sys.modules["retino"].__file__ == str(PROJECT_ROOT / "retino" / "__init__.py")
    assert_same_probabilities([(row, photograph.stem)], old_study.old_predictions)
