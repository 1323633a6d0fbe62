"""Runs carried between MLflow stores: a run read out whole (its name, status and times, params,
tags, every metric's full history, its artifacts) and written into another store as an ended run
with the same values, for a study a reviewer takes home (retino/studies/study_bundle.py).

MLflow's own client does it. mlflow-export-import, the tool for copying between stores, was
weighed: its releases predate MLflow 3, which retino runs on, and a copy here needs no more than a
run's values and files.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.entities import Metric, Param

from retino.tracking.runs import MlflowTracker
from retino.tracking.store import mlflow_client

_PARAMS_PER_CALL, _METRICS_PER_CALL = 100, 1000  # MLflow's log_batch limits


@dataclass
class RunContents:
    """A run as plain values: what a copy of it in another store needs."""

    run_id: str
    name: str
    experiment: str
    status: str
    start_time: int  # milliseconds since the epoch, as MLflow keeps them
    end_time: int | None
    params: dict[str, str]
    tags: dict[str, str]
    # metric -> [(step, value, timestamp)], in the order logged
    metrics: dict[str, list[tuple[int, float, int]]] = field(default_factory=dict)

    def as_json(self) -> dict:
        return {"run_id": self.run_id, "name": self.name, "experiment": self.experiment,
                "status": self.status,
                "start_time": self.start_time, "end_time": self.end_time, "params": self.params,
                "tags": self.tags, "metrics": {key: [list(point) for point in points]
                                               for key, points in self.metrics.items()}}

    @classmethod
    def from_json(cls, data: Mapping) -> RunContents:
        return cls(str(data["run_id"]), str(data["name"]), str(data["experiment"]),
                   str(data["status"]),
                   int(data["start_time"]), data.get("end_time"),
                   {str(k): str(v) for k, v in data["params"].items()},
                   {str(k): str(v) for k, v in data["tags"].items()},
                   {str(key): [(int(step), float(value), int(stamp))
                               for step, value, stamp in points]
                    for key, points in data["metrics"].items()})


def run_contents(run_id: str) -> RunContents:
    """Everything of the run but its artifacts (run_artifacts), from the current store."""
    client = mlflow_client()
    run = client.get_run(run_id)
    metrics = {key: [(m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, key)]
               for key in sorted(run.data.metrics)}
    experiment = client.get_experiment(run.info.experiment_id).name
    return RunContents(run_id, run.info.run_name, experiment, run.info.status, run.info.start_time,
                       run.info.end_time, dict(run.data.params), dict(run.data.tags), metrics)


def artifact_names(run_id: str) -> list[str]:
    """The run's top-level artifacts: its files and folders."""
    return [artifact.path for artifact in mlflow_client().list_artifacts(run_id)]


def run_artifacts(run_id: str, folder: Path, names: Iterable[str]) -> None:
    """The run's top-level artifacts named (files, or folders whole) downloaded into folder."""
    client = mlflow_client()
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        client.download_artifacts(run_id, name, str(folder))


def _batches(items: list, size: int) -> Iterable[list]:
    return (items[start : start + size] for start in range(0, len(items), size))


def write_run(contents: RunContents, tags: Mapping[str, str], artifacts: Path | None = None,
              end: bool = True) -> str:
    """A new run in the current store, in the experiment of the same name, holding contents
    (its own id; its original times, params, metrics with their steps and timestamps, and the
    tags given), the files under artifacts as its artifacts, ended with the original's status
    (left RUNNING with end=False: end_copy ends it); its id."""
    tracker = MlflowTracker(contents.experiment)  # creates the experiment where the store lacks it
    client, experiment_id = tracker.client, tracker.experiment_id
    run = client.create_run(experiment_id, start_time=contents.start_time,
                            run_name=contents.name, tags=dict(tags))
    run_id = run.info.run_id
    params = [Param(k, v) for k, v in sorted(contents.params.items())]
    for batch in _batches(params, _PARAMS_PER_CALL):
        client.log_batch(run_id, params=batch)
    metrics = [Metric(key, value, stamp, step) for key, points in contents.metrics.items()
               for step, value, stamp in points]
    for batch in _batches(metrics, _METRICS_PER_CALL):
        client.log_batch(run_id, metrics=batch)
    if artifacts is not None and artifacts.is_dir() and any(artifacts.iterdir()):
        client.log_artifacts(run_id, str(artifacts))
    if end:
        end_copy(run_id, contents)
    return run_id


def end_copy(run_id: str, contents: RunContents, status: str | None = None) -> None:
    """A copy ended as its original ended (or with status), at its original's end time."""
    mlflow_client().set_terminated(run_id, status or contents.status,
                                   end_time=contents.end_time or int(time.time() * 1000))

