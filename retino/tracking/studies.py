"""A study in the store: its runs (its children, and the runs it reused from other studies), and
the earlier runs of a configuration that a job decides about.

A sweep is one parent run; each job's run is its child (MLflow nests by one parent tag), and a run
that a job of another study skipped to or continued counts in that study too by a member tag.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mlflow.entities import Run

from retino.core.metric_names import SELECTION_SCORE, TEST_ACC
from retino.core.names import (
    CONFIG_HASH_TAG,
    IMPORTED_FROM_TAG,
    PARENT_TAG,
    PRETRAINING,
    PURPOSE_TAG,
    STUDY_MEMBER_PREFIX,
    SUPERSEDED_TAG,
)
from retino.tracking.store import RetryingClient, mlflow_client


@dataclass
class StoredRun:
    """An earlier run of a configuration, as the store holds it."""

    run_id: str
    status: str
    tags: dict[str, str]
    objective: float  # its selection_score (final test_acc for runs from before it existed)


def runs_tagged(experiment: str, tag: str, value: str, newest_first: bool = False) -> list[Run]:
    """The experiment's runs whose tag has this value, by start time ([] without the
    experiment)."""
    client = mlflow_client()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    order = "DESC" if newest_first else "ASC"
    return client.search_runs([found.experiment_id], f"tags.`{tag}` = '{value}'",
                              max_results=10_000, order_by=[f"attributes.start_time {order}"])


def tagged_runs(experiment: str, tag: str, value: str) -> list[str]:
    """The ids of the experiment's runs whose tag has this value, oldest first."""
    return [run.info.run_id for run in runs_tagged(experiment, tag, value)]


def previous_runs(experiment: str, config_hash: str) -> list[StoredRun]:
    """The runs of this configuration in the experiment, newest first."""
    runs = runs_tagged(experiment, CONFIG_HASH_TAG, config_hash, newest_first=True)
    # A run imported from a bundle is the author's evidence, not a result of this machine's.
    return [StoredRun(run.info.run_id, run.info.status, dict(run.data.tags),
                      run.data.metrics.get(SELECTION_SCORE,
                                           run.data.metrics.get(TEST_ACC, float("nan"))))
            for run in runs if IMPORTED_FROM_TAG not in run.data.tags]


def study_member_tags(run_tags: Mapping[str, str], parent_id: str) -> dict[str, str]:
    """The tag that counts a run (skipped to, or continued, by a job of study parent_id) in that
    study's report too, unless it is already its child: MLflow nests a run under one parent."""
    if run_tags.get(PARENT_TAG) == parent_id:
        return {}
    return {f"{STUDY_MEMBER_PREFIX}{parent_id}": "true"}


def study_runs(client: RetryingClient, parent_id: str) -> list[Run]:
    """The runs of a study: its children, and the runs it reused from other studies; not the
    attempts that a later run of the same job replaced (tagged superseded_by)."""
    experiment_id = client.get_run(parent_id).info.experiment_id
    found = {}
    for query in (f"tags.`{PARENT_TAG}` = '{parent_id}'",
                  f"tags.`{STUDY_MEMBER_PREFIX}{parent_id}` = 'true'"):
        for run in client.search_runs([experiment_id], query, max_results=10_000):
            tags = run.data.tags
            if SUPERSEDED_TAG not in tags and tags.get(PURPOSE_TAG) != PRETRAINING:
                found[run.info.run_id] = run  # a nested pretraining run is not a job's
    return sorted(found.values(), key=lambda run: run.info.start_time)


def study_members(parent_id: str) -> list[tuple[str, str]]:
    """(run id, status) of every run of a study, oldest first."""
    return [(run.info.run_id, run.info.status) for run in study_runs(mlflow_client(), parent_id)]
