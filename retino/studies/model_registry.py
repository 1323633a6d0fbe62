"""A study's best configuration into the MLflow Model Registry.

The configuration is chosen without the test set: by the validation metric each run selected its
epoch with (`selection_score`, its mean over the configuration's seeds), or the validation kappa
when the runs selected by different metrics; runs without a validation split are refused, with
the reason. Within the chosen configuration the best seed's model is registered. Its version links
back to the run and the study in its tags; `models:/<name>/<version>` then loads as a pyfunc.

A cross-validated study registers a fold ensemble instead: the configuration whose out-of-fold
predictions score best by that metric (studies/folds.py best_fold_ensemble), all its fold models
in one MLflow model (serving/pyfunc.py save_ensemble_grader), logged on the study's parent run at
`ensemble_model` and registered from there. When no cross-validated configuration has all its
folds, the study falls back to registering its best single run, as above, saying so.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import pandas as pd
from mlflow.entities import LoggedModelStatus
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from retino.core.errors import ConfigError
from retino.core.names import ENSEMBLE_MODEL_DIR, MODEL_DIR, PARENT_TAG, STUDY_TAG
from retino.studies.comparison import best_run
from retino.studies.folds import EnsembleChoice, best_fold_ensemble
from retino.tracking.records import RunRecord
from retino.tracking.runs import log_folder, read_artifact
from retino.tracking.store import RetryingClient, mlflow_client

log = logging.getLogger(__name__)


def register_best(runs: list[RunRecord], name: str, study: str | None = None) -> ModelVersion:
    """Register the best configuration's model under `name` (created if new); a new version
    each time, tagged with its run (or a fold ensemble's member runs), study and how it was
    chosen. study: the study's parent run id (a fold ensemble is logged there)."""
    choice = best_fold_ensemble(runs)
    if choice is None:
        return _register_run(runs, name, study)
    return _register_ensemble(choice, name, study)


def _registered_model(client: RetryingClient, name: str) -> None:
    try:
        client.create_registered_model(name, description="Diabetic-retinopathy grader "
                                       "(retino): photographs in, grades 0-4 and P(referable) "
                                       "out.")
    except MlflowException as err:
        if "already exists" not in str(err).lower() and "RESOURCE_ALREADY_EXISTS" not in str(err):
            raise


def _register_run(runs: list[RunRecord], name: str, study: str | None) -> ModelVersion:
    """The best configuration's best seed: that run's own logged model."""
    run, metric, score = best_run(runs)
    client = mlflow_client()
    source, model_id = run_model(client, run.run_id)
    if source is None:
        raise ConfigError(f"Run {run.run_id} ({run.name}) logged no MLflow model (it ran with "
                          "log_model=false or before models were logged): train its "
                          "configuration again with log_model=true resume=false (a re-run "
                          "would reuse the finished run) to register it.")
    _registered_model(client, name)
    tags = {"run_id": run.run_id, "run_name": run.name, "selected_by": metric,
            "score": f"{score:.6g}", **({STUDY_TAG: study} if study else {})}
    version = client.create_model_version(name, source, run_id=run.run_id, tags=tags,
                                          model_id=model_id)
    log.info("Registered %s version %s: run %s (%s), chosen by %s = %.4f.", name,
             version.version, run.name, run.run_id, metric, score)
    return version


def run_model(client: RetryingClient, run_id: str) -> tuple[str | None, str | None]:
    """(source, model id) of the run's MLflow model: its newest READY MLflow 3 logged model
    (models:/<id>), or, for a run logged before retino logged them so, the model folder among
    its artifacts (no id); (None, None) when it has neither."""
    found = client.get_run(run_id)
    models = client.search_logged_models(
        experiment_ids=[found.info.experiment_id],
        filter_string=f"name = '{MODEL_DIR}' AND source_run_id = '{run_id}'",
        order_by=[{"field_name": "creation_timestamp", "ascending": False}])
    if model := next((m for m in models if m.status == LoggedModelStatus.READY), None):
        return f"models:/{model.model_id}", model.model_id
    if any(a.path == MODEL_DIR for a in client.list_artifacts(run_id)):
        return f"{found.info.artifact_uri}/{MODEL_DIR}", None
    return None, None


def _register_ensemble(choice: EnsembleChoice, name: str, study: str | None) -> ModelVersion:
    """The chosen configuration's fold models as one MLflow model, built from their logged
    config and weights, logged on the study's parent run and registered from there."""
    # Here, not at the top: a report (python -m retino.report) never waits for torch to import.
    from retino.serving.grader import run_from_store
    from retino.serving.pyfunc import save_ensemble_grader

    ids = [run.run_id for run in choice.runs]
    parent = study or choice.runs[0].tags.get(PARENT_TAG)
    if not parent:
        raise ConfigError(f"The fold runs of {choice.pool.label} belong to no study, and a fold "
                          "ensemble is logged on its study's parent run: register it with "
                          "python -m retino.report --parent <study run id> --register NAME.")
    members = [run_from_store(run_id) for run_id in ids]  # downloads config and weights
    client = mlflow_client()
    with tempfile.TemporaryDirectory(prefix="retino-ensemble-") as folder:
        saved = save_ensemble_grader(members, choice.pool.choosing, Path(folder),
                                     _input_example(ids[0]))
        source = log_folder(parent, saved, _free_path(client, parent))
    _registered_model(client, name)
    metric = f"out-of-fold {choice.metric}"
    tags = {"members": ",".join(ids), "configuration": choice.pool.label,
            "folds": str(choice.pool.folds), "selected_by": metric,
            "score": f"{choice.score:.6g}", STUDY_TAG: parent}
    version = client.create_model_version(name, source, run_id=parent, tags=tags)
    log.info("Registered %s version %s: the fold ensemble of %s (%d runs: %s), chosen by %s = "
             "%.4f.", name, version.version, choice.pool.label, len(ids), ", ".join(ids),
             metric, choice.score)
    return version


def _free_path(client: RetryingClient, run_id: str) -> str:
    """ensemble_model, or ensemble_model-2, -3, ... when the study registered one before: a
    version's files never change under it."""
    taken = {artifact.path for artifact in client.list_artifacts(run_id)}
    path, n = ENSEMBLE_MODEL_DIR, 1
    while path in taken:
        n += 1
        path = f"{ENSEMBLE_MODEL_DIR}-{n}"
    return path


def _input_example(run_id: str) -> pd.DataFrame | None:
    """The first fold model's input example (a photograph), for the ensemble's MLmodel; None
    when the run logged no model."""
    try:
        example = read_artifact(run_id, f"{MODEL_DIR}/input_example.json",
                                lambda path: json.loads(path.read_text()))
    except (MlflowException, OSError, ValueError):
        return None
    return pd.DataFrame(example["data"], columns=example["columns"])
