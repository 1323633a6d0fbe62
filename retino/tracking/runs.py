"""A tracked run in MLflow: its params, metrics, tags, artifacts and dataset; a run that always
ends (FINISHED, FAILED with its error, or KILLED); and the few calls on existing runs that jobs
and studies make (tags, artifacts, ending a study's parent run).

With retino/tracking/store.py (which store, and a client safe for parallel jobs), the only place
that talks to MLflow runs; serving and studies import mlflow only for models and the registry.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import requests
from mlflow.entities import (
    Dataset,
    DatasetInput,
    InputTag,
    LoggedModelOutput,
    Metric,
    Param,
    RunTag,
)
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from retino.core.errors import first_line, user_message
from retino.core.names import ERROR_FILE, ERROR_TAG, FAILED, FINISHED, KILLED, RUNNING
from retino.data.load.digest import DataIdentity
from retino.tracking.store import (
    EXPERIMENT_KIND,
    artifact_location,
    default_tracking_uri,
    mlflow_client,
    run_page,
    ui_pages,
)

log = logging.getLogger(__name__)
T = TypeVar("T")  # what read_artifact's reader makes of a file

_BATCH = 100  # MLflow accepts at most 100 params per log_batch call
_MAX_TAG_CHARS = 5000

# A tracking server that does not answer: MLflow's own retries (7, doubling: about 4 minutes a
# call) stalled training for 9 minutes and more; here a call gives up within about 30 s, the
# epochs' metrics wait in memory (and in last.pt's history) while training goes on, and what the
# run must send at its end is retried for TRACKING_PATIENCE_S.
MLFLOW_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                  "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
PATIENCE_ENV = "RETINO_TRACKING_PATIENCE_S"
TRACKING_PATIENCE_S = 900.0


def unreachable(err: BaseException) -> bool:
    """Whether err says the tracking server did not answer: no connection, a timeout, or a
    5xx / 429 answer. A request it refused (401, 403, 400), a file missing, a full disk: raised
    at once, never waited on."""
    if isinstance(err, (ConnectionError, TimeoutError, requests.ConnectionError,
                        requests.Timeout)):
        return True
    if not isinstance(err, MlflowException):
        return False
    text = str(err)
    if "failed with exception" in text:  # MLflow's words for a request that got no answer
        return True
    status = re.search(r"error code (\d{3})", text)
    return bool(status) and (int(status.group(1)) >= 500 or status.group(1) == "429")


class MlflowTracker:
    """One MLflow run, driven through MlflowClient (no global active-run state)."""

    def __init__(self, experiment: str, tracking_uri: str | None = None) -> None:
        for key, value in MLFLOW_RETRIES.items():  # a user's own settings win
            os.environ.setdefault(key, value)
        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.client = mlflow_client(self.tracking_uri)
        self.pending: list[Metric] = []  # metrics the server has not taken yet
        self.experiment_id = self._experiment_id(experiment)
        self.run_id: str | None = None
        self.announce_end = True  # False: its caller says where the run is, with its result

    def _experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if EXPERIMENT_KIND[0] not in found.tags:
                self.client.set_experiment_tag(found.experiment_id, *EXPERIMENT_KIND)
            return found.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location(self.tracking_uri),
                                                 tags=dict([EXPERIMENT_KIND]))
        except Exception:  # another job created it between our two calls
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def start(self, run_name: str, tags: Mapping[str, str]) -> str:
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=dict(tags))
        self.run_id = run.info.run_id
        log.info("MLflow run %s (%s) in %s", run_name, self.run_id, self.tracking_uri)
        return self.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + _BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Send the metrics, and any the server missed; when it cannot be reached they wait,
        and training goes on (flush_metrics)."""
        now = int(time.time() * 1000)
        self.pending += [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self.flush_metrics()

    def flush_metrics(self) -> bool:
        """Send the waiting metrics, oldest first; False (they keep waiting) when the server
        cannot be reached."""
        while self.pending:
            try:
                self.client.log_batch(self.run_id, metrics=self.pending[:_BATCH])
            except Exception as err:
                if not unreachable(err):
                    raise
                log.warning("The tracking server %s does not answer (%s): training goes on, "
                            "and %d metric values wait to be sent.", self.tracking_uri,
                            first_line(err), len(self.pending))
                return False
            del self.pending[:_BATCH]
        return True

    def patiently(self, call: Callable[[], Any], what: str) -> Any:
        """call(), retried while the server does not answer, for up to TRACKING_PATIENCE_S
        (RETINO_TRACKING_PATIENCE_S); then the last error is raised."""
        deadline = time.monotonic() + float(os.environ.get(PATIENCE_ENV, TRACKING_PATIENCE_S))
        while True:
            try:
                return call()
            except Exception as err:
                if not unreachable(err) or time.monotonic() > deadline:
                    raise
                log.warning("The tracking server does not answer (%s): %s waits and tries "
                            "again.", first_line(err), what)
                time.sleep(5)

    def log_artifact(self, path: Path) -> None:
        self.patiently(lambda: self.client.log_artifact(self.run_id, str(path)),
                       f"logging {path.name}")

    def log_artifacts(self, folder: Path, artifact_path: str) -> None:
        """Every file under folder, at artifact_path in the run (an MLflow model's folder)."""
        self.patiently(lambda: self.client.log_artifacts(self.run_id, str(folder),
                                                         artifact_path),
                       f"logging {artifact_path}")

    def logged_steps(self, key: str) -> set[int]:
        return {m.step for m in self.client.get_metric_history(self.run_id, key)}

    def log_model(self, folder: Path, name: str, metrics: Mapping[str, float], step: int,
                  tags: Mapping[str, str] | None = None) -> str:
        """The saved MLflow model in folder as an MLflow 3 logged model of this run: listed in
        the experiment's Models view and on the run's page, with the run's values of these
        metrics linked to it, and loaded as runs:/<run id>/<name> or models:/<model id>. A model
        that fails half-way is marked FAILED and deleted (runs:/ would pick it, being newest);
        one logged before by this run (a resumed run's) is replaced. Returns its id."""
        model = self.patiently(lambda: self.client.create_logged_model(
            self.experiment_id, name=name, source_run_id=self.run_id, model_type="pyfunc",
            tags=dict(tags or {})), f"creating the logged model {name}")
        try:
            self._fill_model(model.model_id, folder, metrics, step)
        except BaseException:
            self._drop_model(model.model_id)
            raise
        for older in self._run_models(name):
            if older.model_id != model.model_id:
                self._drop_model(older.model_id)
        return model.model_id

    def _fill_model(self, model_id: str, folder: Path, metrics: Mapping[str, float],
                    step: int) -> None:
        self.patiently(lambda: self.client.log_model_artifacts(model_id, str(folder)),
                       "logging the model's files")
        # linked at the timestamps the run logged them with: MLflow writes a linked metric to
        # the run too, and the same timestamp makes that no second point of its history
        logged = {key: next((m for m in self.client.get_metric_history(self.run_id, key)
                             if m.step == step), None) for key in metrics}
        now = int(time.time() * 1000)
        linked = [Metric(key, float(value), logged[key].timestamp if logged[key] else now,
                         step, model_id=model_id) for key, value in metrics.items()]
        self.patiently(lambda: self.client.log_batch(self.run_id, metrics=linked),
                       "linking the run's metrics to its model")
        self.patiently(lambda: self.client.log_outputs(
            self.run_id, [LoggedModelOutput(model_id, step)]), "linking the model")
        self.patiently(lambda: self.client.finalize_logged_model(model_id, "READY"),
                       "finishing the logged model")

    def _run_models(self, name: str) -> list:
        return list(self.client.search_logged_models(
            experiment_ids=[self.experiment_id],
            filter_string=f"name = '{name}' AND source_run_id = '{self.run_id}'"))

    def _drop_model(self, model_id: str) -> None:
        """A logged model no one should load: marked FAILED, then deleted (best effort: the
        server may be away)."""
        try:
            self.client.finalize_logged_model(model_id, FAILED)
            self.client.delete_logged_model(model_id)
        except Exception as err:  # noqa: BLE001 - the model's own error is the one to raise
            log.warning("The logged model %s could not be removed (%s).", model_id,
                        first_line(err))

    def reopen(self, run_id: str) -> None:
        """Continue an interrupted run: the same run id, its metrics go on from where they end."""
        self.run_id = run_id
        self.client.update_run(run_id, status=RUNNING)
        if ERROR_TAG in self.client.get_run(run_id).data.tags:  # why it stopped: no longer true
            self.client.delete_tag(run_id, ERROR_TAG)
        log.info("Continuing MLflow run %s", run_id)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if tags:
            items = [RunTag(k, str(v)) for k, v in tags.items()]
            self.patiently(lambda: self.client.log_batch(self.run_id, tags=items), "a tag")

    def log_dataset(self, data: DataIdentity) -> None:
        """The data as an MLflow dataset input: its digest and split sizes show in `mlflow ui`."""
        source = json.dumps({"uri": data.root.resolve().as_uri()})
        profile = json.dumps({"num_rows": sum(data.sizes.values()),
                              **{f"{split}_images": n for split, n in data.sizes.items()}})
        dataset = Dataset(name=data.root.name, digest=data.digest, source_type="local",
                          source=source, profile=profile)
        inputs = [DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "train and test")])]
        for attempt in range(3):
            try:
                self.client.log_inputs(self.run_id, datasets=inputs)
                return
            except MlflowException as err:
                # Parallel jobs on one dataset: MLflow's store creates it in two steps (look
                # up, insert), so another job may have inserted it in between. Then it exists.
                if "UNIQUE constraint failed: datasets" not in str(err) or attempt == 2:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def end(self, status: str = FINISHED) -> None:
        """Send what waits, then end the run: retried while the server is away for a run that
        finished; once for one that failed or was stopped (a Ctrl-C must not wait minutes)."""
        if status != FINISHED:
            self.flush_metrics()
            self.client.set_terminated(self.run_id, status)
            return
        self.patiently(lambda: self.flush_metrics() or _raise_unsent(len(self.pending)),
                       "sending the waiting metrics")
        self.patiently(lambda: self.client.set_terminated(self.run_id, status),
                       "ending the run")
        if self.announce_end:
            log.info("MLflow run %s %s. In mlflow ui: %s", self.run_id, status,
                     ui_pages(self.tracking_uri, self.experiment_id, self.run_id))
        else:
            log.info("MLflow run %s %s.", self.run_id, status)

    def page(self) -> str:
        """Where mlflow ui shows this run (and how to start it, for a local store)."""
        return run_page(self.tracking_uri, self.experiment_id, self.run_id)


def _raise_unsent(count: int) -> None:
    raise ConnectionError(f"{count} metric values could not be sent yet")


def _record_failure(tracker: MlflowTracker, err: BaseException) -> None:
    """Keep the error with the run: a short tag for the UI, the traceback as an artifact (one
    attempt each: a failing run does not wait for an absent server)."""
    message = f"{type(err).__name__}: {user_message(err)}"
    tracker.client.set_tag(tracker.run_id, ERROR_TAG, message[:_MAX_TAG_CHARS])
    text = "".join(traceback.format_exception(err))
    tracker.client.log_text(tracker.run_id, text, ERROR_FILE)


@contextmanager
def mlflow_run(experiment: str, run_name: str, params: Mapping[str, Any],
               tags: Mapping[str, str], resume_run_id: str | None = None,
               system_metrics: bool = False) -> Iterator[MlflowTracker]:
    """A run that ends FINISHED, or FAILED with its error (KILLED when interrupted or
    terminated): never left RUNNING. With resume_run_id, that run is continued instead.
    With system_metrics, CPU, memory, disk, network and GPU use are sampled into the run."""
    tracker = MlflowTracker(experiment)
    if resume_run_id:
        tracker.reopen(resume_run_id)
    else:
        tracker.start(run_name, tags)
    monitor = None
    try:
        if system_metrics:
            monitor = _system_monitor(tracker, resumed=bool(resume_run_id))
        if resume_run_id:
            tracker.set_tags(tags)  # what the continuing job adds (commits, its study)
        else:
            tracker.log_params(params)
        yield tracker
    except BaseException as err:
        status = KILLED if isinstance(err, (KeyboardInterrupt, SystemExit)) else FAILED
        try:
            _record_failure(tracker, err)
            _end(tracker, monitor, status)
        except Exception as lost:  # noqa: BLE001 - the run's own error is the one to raise
            log.warning("Run %s could not be marked %s on the tracking server (%s); running "
                        "the command again resumes it.", tracker.run_id, status,
                        first_line(lost))
        raise
    try:
        if resume_run_id:
            _clear_recovered_failure(tracker)
    except Exception as err:  # noqa: BLE001 - the run trained: it must still end FINISHED
        log.warning("Run %s: the error of its earlier attempt could not be cleared (%s).",
                    tracker.run_id, first_line(err))
    _end(tracker, monitor, FINISHED)


def _clear_recovered_failure(tracker: MlflowTracker) -> None:
    """A resumed run that finishes keeps no error of the attempt it recovered from: its
    `error` tag and error.txt said FAILED beside a FINISHED status."""
    run = tracker.client.get_run(tracker.run_id)
    if ERROR_TAG in run.data.tags:
        tracker.client.delete_tag(tracker.run_id, ERROR_TAG)
    if any(item.path == ERROR_FILE for item in tracker.client.list_artifacts(tracker.run_id)):
        get_artifact_repository(run.info.artifact_uri).delete_artifacts(ERROR_FILE)
        log.info("Run %s recovered: the error of its earlier attempt is cleared.",
                 tracker.run_id)


SYSTEM_METRICS_INTERVAL_S = 10  # MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL overrides it


def _system_monitor(tracker: MlflowTracker, resumed: bool):
    """MLflow's sampler of system/* metrics for this run, started (psutil; pynvml for GPUs)."""
    # here: only log_system_metrics=true needs the sampler (and psutil, pynvml behind it)
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(tracker.run_id, SYSTEM_METRICS_INTERVAL_S,
                                   resume_logging=resumed, tracking_uri=tracker.tracking_uri)
    monitor.start()
    return monitor


def _end(tracker: MlflowTracker, monitor, status: str) -> None:
    """Stop the system-metrics sampler (it publishes what it has batched), then end the run."""
    try:
        if monitor is not None:
            monitor.finish()
    finally:
        tracker.end(status)


def set_run_tags(run_id: str, tags: Mapping[str, str]) -> None:
    if tags:
        mlflow_client().log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def read_artifact(run_id: str, path: str, read: Callable[[Path], T]) -> T:
    """What `read` makes of one artifact of a run, downloaded to a temporary folder that is
    removed as soon as it is read (a notebook or a server grading by run id kept every
    download, weights included, until it exited)."""
    with tempfile.TemporaryDirectory(prefix="retino-") as folder:
        return read(Path(mlflow_client().download_artifacts(run_id, path, folder)))


def download_artifact(run_id: str, path: str, folder: Path) -> Path:
    """One artifact of a run, downloaded into folder, which is the caller's to remove."""
    return Path(mlflow_client().download_artifacts(run_id, path, str(folder)))


def log_folder(run_id: str, folder: Path, artifact_path: str) -> str:
    """Every file under folder logged at artifact_path of an existing run (a study's parent,
    running or ended: a model registered after its study); the URI of the logged folder."""
    client = mlflow_client()
    client.log_artifacts(run_id, str(folder), artifact_path)
    return f"{client.get_run(run_id).info.artifact_uri}/{artifact_path}"


def start_parent_run(experiment: str, name: str, tags: Mapping[str, str]) -> str:
    """Create the study's parent run (left RUNNING until end_run) and return its id."""
    return MlflowTracker(experiment).start(name, tags)


def end_run(run_id: str, status: str, artifacts: list[Path] = ()) -> None:
    """End a study's parent run with its report, and say where mlflow ui shows it."""
    client = mlflow_client()
    for path in artifacts:
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, status)
    experiment_id = client.get_run(run_id).info.experiment_id
    log.info("Study %s %s. In mlflow ui: %s", run_id, status,
             ui_pages(default_tracking_uri(), experiment_id, run_id))


def run_tags(run_id: str) -> dict[str, str]:
    return dict(mlflow_client().get_run(run_id).data.tags)


