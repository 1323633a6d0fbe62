"""A study's best configuration into the MLflow Model Registry.

The configuration is chosen without the test set: by the validation metric each run selected its
epoch with (`selection_score`, its mean over the configuration's seeds), or the validation kappa
when the runs selected by different metrics; runs without a validation split are refused, with
the reason. Within the chosen configuration the best seed's model is registered. Its version links
back to the run and the study in its tags; `models:/<name>/<version>` then loads as a pyfunc.
"""

from __future__ import annotations

import logging

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from retino.core.errors import ConfigError
from retino.core.names import MODEL_DIR, STUDY_TAG
from retino.studies.comparison import best_run
from retino.tracking.records import RunRecord
from retino.tracking.store import mlflow_client

log = logging.getLogger(__name__)


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
            "score": f"{score:.6g}", **({STUDY_TAG: study} if study else {})}
    version = client.create_model_version(name, f"{found.info.artifact_uri}/{MODEL_DIR}",
                                          run_id=run.run_id, tags=tags)
    log.info("Registered %s version %s: run %s (%s), chosen by %s = %.4f.", name,
             version.version, run.name, run.run_id, metric, score)
    return version
