"""A study's best configuration into the MLflow Model Registry.

The configuration is chosen without the test set wherever the runs have a validation split: by
the validation metric each run selected its epoch with (`selection_score`, its mean over the
configuration's seeds); only runs without one fall back to the final test kappa, and the version
says so. Within the chosen configuration the best seed's model is registered. Its version links
back to the run and the study in its tags; `models:/<name>/<version>` then loads as a pyfunc.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from retino.errors import ConfigError
from retino.records import RunRecord
from retino.report import run_labels
from retino.served import MODEL_DIR
from retino.store import mlflow_client

log = logging.getLogger(__name__)


def selection_rule(runs: list[RunRecord]) -> tuple[str, bool]:
    """(metric, higher is better) that chooses among these runs: the validation metric they
    selected with when every run had a validation split, else the test kappa."""
    metrics = {run.params.get("selection_metric", "val_qwk") for run in runs}
    if all(run.val is not None for run in runs) and len(metrics) == 1:
        metric = metrics.pop()
        return "selection_score", not metric.endswith("loss")
    return "test_qwk_selected", True


def best_run(runs: list[RunRecord]) -> tuple[RunRecord, str, float]:
    """(run, the metric that chose it, the configuration's mean score) among finished runs."""
    finished = [run for run in runs if run.status == "FINISHED"]
    if not finished:
        raise ConfigError("No finished run to register: the study has none.")
    metric, higher = selection_rule(finished)
    sign = 1.0 if higher else -1.0
    groups: dict[str, list[RunRecord]] = defaultdict(list)
    for run, label in ((run, run_labels(finished)[run.run_id]) for run in finished):
        groups[label].append(run)

    def mean_score(members: list[RunRecord]) -> float:
        return float(np.mean([sign * run.final.get(metric, np.nan) for run in members]))

    label = max(groups, key=lambda name: np.nan_to_num(mean_score(groups[name]), nan=-np.inf))
    chosen = max(groups[label], key=lambda run: sign * run.final.get(metric, -np.inf))
    return chosen, metric, sign * mean_score(groups[label])


def register_best(runs: list[RunRecord], name: str, study: str | None = None) -> ModelVersion:
    """Register the best configuration's model under `name` (created if new); a new version
    each time, tagged with its run, study and how it was chosen."""
    run, metric, score = best_run(runs)
    client = mlflow_client()
    found = client.get_run(run.run_id)
    if not any(a.path == MODEL_DIR for a in client.list_artifacts(run.run_id)):
        raise ConfigError(f"Run {run.run_id} ({run.name}) logged no MLflow model (it ran with "
                          "log_model=false or before models were logged): re-run it with "
                          "log_model=true to register it.")
    try:
        client.create_registered_model(name, description="Diabetic-retinopathy grader "
                                       "(retino): photographs in, grades 0-4 and P(referable) "
                                       "out.")
    except MlflowException as err:
        if "already exists" not in str(err).lower() and "RESOURCE_ALREADY_EXISTS" not in str(err):
            raise
    tags = {"run_id": run.run_id, "run_name": run.name, "selected_by": metric,
            "score": f"{score:.6g}", **({"study": study} if study else {})}
    version = client.create_model_version(name, f"{found.info.artifact_uri}/{MODEL_DIR}",
                                          run_id=run.run_id, tags=tags)
    log.info("Registered %s version %s: run %s (%s), chosen by %s = %.4f%s.", name,
             version.version, run.name, run.run_id, metric, score,
             "" if metric == "selection_score" else " (no validation split: by the test set)")
    return version
