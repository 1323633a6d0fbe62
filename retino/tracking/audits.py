"""A data audit in the store: its own run, found again by the data digest it audited, so that
every run on that data links to it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from retino.core.names import AUDIT_TAG, DATA_DIGEST_TAG, NOTE_TAG
from retino.data.load.digest import DataIdentity
from retino.tracking.runs import mlflow_run
from retino.tracking.store import mlflow_client


def log_audit(experiment: str, identity: DataIdentity, params: Mapping[str, object],
              metrics: Mapping[str, float], files: Sequence[Path], report: str) -> str:
    """The audit as a finished run (its numbers as metrics, its files as artifacts, its report
    as the run's description), tagged with the data digest; returns its id."""
    tags = {AUDIT_TAG: identity.digest, DATA_DIGEST_TAG: identity.digest, NOTE_TAG: report}
    with mlflow_run(experiment, f"data audit: {identity.root.name}", params, tags) as tracker:
        tracker.log_dataset(identity)
        tracker.log_metrics(metrics, step=0)
        for path in files:
            tracker.log_artifact(path)
        return tracker.run_id


def audit_run_for(experiment: str, digest: str) -> str | None:
    """The newest finished audit of the data with this digest in the experiment, if any."""
    client = mlflow_client()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs([found.experiment_id],
                              f"tags.{AUDIT_TAG} = '{digest}' and attributes.status = 'FINISHED'",
                              max_results=1, order_by=["attributes.start_time DESC"])
    return runs[0].info.run_id if runs else None


def audit_metrics(run_id: str) -> dict[str, float]:
    """The numbers an audit's run holds ({} when the run is gone from the store)."""
    try:
        return dict(mlflow_client().get_run(run_id).data.metrics)
    except Exception:  # noqa: BLE001 - a deleted or foreign run: the report says it has none
        return {}
