"""A study's runs read back from the MLflow store as plain values, for reports: params, tags,
metric series, and the per-image predictions files that every reported number is computed from."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from retino.core.grades import GRADE_COLUMN, NUM_GRADES, PREDICTED_COLUMN
from retino.core.metric_names import TEST_ACC, TEST_QWK, TRAIN_ACC
from retino.core.names import CONFIG_NAME_TAG, CONFUSION_CSV, predictions_file
from retino.evaluation.metrics import confusion_matrix
from retino.evaluation.predictions import read_predictions
from retino.tracking.store import RetryingClient, mlflow_client
from retino.tracking.studies import study_runs


@dataclass
class RunRecord:
    """One finished (or failed) run, read back from the store as plain values."""

    run_id: str
    name: str
    status: str
    params: dict[str, str]
    tags: dict[str, str]
    history: dict[str, list[float]]  # metric -> value per epoch (step 1, 2, ...)
    final: dict[str, float]  # every metric's last value
    confusion: np.ndarray | None  # (5, 5) test counts at the selected epoch; None if not logged
    test: pd.DataFrame | None = None  # predictions_test.csv: per image, at the selected epoch
    val: pd.DataFrame | None = None  # predictions_val.csv (none without a validation split)


def _metric_series(client: RetryingClient, run_id: str, key: str) -> list[float]:
    points = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
    return [m.value for m in points]


def _predictions(client: RetryingClient, run_id: str, names: set[str], split: str,
                 folder: Path) -> pd.DataFrame | None:
    name = predictions_file(split)
    if name not in names:
        return None
    return read_predictions(Path(client.download_artifacts(run_id, name, str(folder))))


def _confusion(client: RetryingClient, run_id: str, names: set[str], test: pd.DataFrame | None,
               folder: Path) -> np.ndarray | None:
    """From the test predictions; from confusion_matrix.csv for runs that logged no
    predictions."""
    if test is not None:
        return confusion_matrix(test[GRADE_COLUMN], test[PREDICTED_COLUMN])
    if CONFUSION_CSV not in names:
        return None
    path = client.download_artifacts(run_id, CONFUSION_CSV, str(folder))
    return np.loadtxt(path, delimiter=",", skiprows=1, usecols=range(1, NUM_GRADES + 1),
                      dtype=np.int64)


def read_runs(run_ids: list[str] | None = None, parent_id: str | None = None,
              metrics: tuple[str, ...] = (TRAIN_ACC, TEST_ACC, TEST_QWK)) -> list[RunRecord]:
    """The given runs, or every run of the study parent_id, oldest first, as RunRecords."""
    client = mlflow_client()
    if parent_id is not None:
        runs = study_runs(client, parent_id)
    else:
        runs = [client.get_run(run_id) for run_id in run_ids or []]
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs:
            run_id = run.info.run_id
            history = {key: _metric_series(client, run_id, key) for key in metrics}
            names = {artifact.path for artifact in client.list_artifacts(run_id)}
            test, val = (_predictions(client, run_id, names, split, Path(tmp))
                         for split in ("test", "val"))
            # The configuration's name: a study's run name also shows its seed (and axes).
            name = run.data.tags.get(CONFIG_NAME_TAG, run.info.run_name)
            records.append(RunRecord(
                run_id, name, run.info.status, dict(run.data.params), dict(run.data.tags),
                history, dict(run.data.metrics),
                _confusion(client, run_id, names, test, Path(tmp)), test, val))
    return records


def stored_runs(run_ids: set[str]) -> set[str]:
    """Those of the run ids that the current store holds."""
    client = mlflow_client()
    held = set()
    for run_id in run_ids:
        try:
            client.get_run(run_id)
        except MlflowException:
            continue
        held.add(run_id)
    return held
