"""A multirun is a study: Hydra callbacks that give it a parent MLflow run and a report.

At the start of a sweep, the parent run is created (named after the sweep file, with the command
line and overrides as tags) and its id handed to the jobs (environment and a file in the sweep
folder, so launchers that start new processes find it too); each job's run becomes its child.
At the end, the report (retino/studies/study_report.py) is built from the study's runs in the store,
attached to the parent, and the failed jobs are listed; the command then exits non-zero if any
failed.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from retino.config.schema import has_validation
from retino.core.errors import first_line
from retino.core.names import (
    ALLOWED_CHANGES_ENV,
    ALLOWED_CHANGES_TAG,
    BUNDLE_ENV,
    BUNDLE_TAG,
    CODE_VERSION_TAG,
    COMMAND_TAG,
    ERROR_TAG,
    FAILED,
    FINISHED,
    GIT_COMMIT_TAG,
    KILLED,
    NOTE_TAG,
    OUTPUT_DIR_TAG,
    OVERRIDES_TAG,
    PAGE_FILE,
    PARENT_ENV,
    REPRODUCES_ENV,
    REPRODUCES_TAG,
    RESULTS_FILE,
    STUDY_TAG,
    SWEPT_TAG,
)
from retino.jobs.identity import code_version, git_commit

# MLflow, the report and the registry are imported inside the callbacks that use them: run.py
# imports this module, and its start-up (--help, a typo's error) must not wait for MLflow.

log = logging.getLogger(__name__)

PARENT_FILE = ".retino_parent_run"
SWEPT_FILE = ".retino_swept"  # the study's swept axes, one per line, for its jobs' run names


def _sweep_overrides(config: DictConfig) -> list[Override]:
    """The multirun's sweep overrides: the command line's (model=resnet18,resnet50;
    lr=range(...)) and the sweep file's sweeper params (a search's space)."""
    params = config.hydra.sweeper.get("params") or {}
    overrides = [*config.hydra.overrides.task, *(f"{k}={v}" for k, v in params.items())]
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [override for override in parsed if override.is_sweep_override()]


def swept_axes(config: DictConfig) -> list[str]:
    """The keys (or config groups) a multirun sweeps, in order."""
    return list(dict.fromkeys(o.key_or_group for o in _sweep_overrides(config)))


def _smallest_in_space(override: Override) -> float:
    """The smallest value a swept number can take: an interval's start, a choice's or a
    range's least member."""
    value = override.value()
    if isinstance(value, IntervalSweep):
        return float(value.start)
    return min(float(member) for member in override.sweep_iterator())


def space_without_validation(config: DictConfig) -> str | None:
    """The swept data.val_fraction whose space holds 0 (a point of the search with no
    validation split), or None."""
    for override in _sweep_overrides(config):
        if override.key_or_group == "data.val_fraction" and _smallest_in_space(override) <= 0:
            return override.input_line or f"data.val_fraction={override.get_value_string()}"
    return None


def study_name(config: DictConfig) -> str:
    """The sweep file's name (`-cn comparison`); for a plain `run.py -m ...` its swept axes
    (`model×pretrained sweep`: a study of one axis is never named like the axis alone), or
    'sweep' when none; 'reproduction' for a study re-run by python -m retino.reproduce."""
    if os.environ.get(REPRODUCES_ENV):
        return "reproduction"
    name = config.hydra.job.config_name
    if name not in (None, "config"):
        return str(name)
    return " ".join(["×".join(swept_axes(config)), "sweep"]).strip()


def describe_study(run_id: str, results: Path, page: Path) -> None:
    """The study's parent run says its results on its Overview tab (its description): the
    report's first section, its results table, whole lines of it, and where the whole report
    is. Best effort: a description that cannot be set leaves the study as it is."""
    from retino.tracking.runs import set_run_tags

    where = f"\n\nThe whole report: `{PAGE_FILE}` under Artifacts (on disk: {page})."
    first = results.read_text().split("\n## ")[0]
    if len(first) + len(where) > NOTE_CHARS:
        cut = first[:NOTE_CHARS - len(where) - len(MORE)].rsplit("\n", 1)[0]
        first = cut + MORE
    try:
        set_run_tags(run_id, {NOTE_TAG: first + where})
    except Exception as err:  # noqa: BLE001 - the study and its report are already kept
        log.warning("The study's description could not be set (%s).", first_line(err))


# MLflow 3.17 keeps a tag's first 8000 characters (older servers 5000): the description stays
# within the smaller, cut at a line's end.
NOTE_CHARS = 5000
MORE = "\n\n(… the rest in results.md)"


def swept_in(sweep_dir: str | Path) -> tuple[str, ...]:
    """The running study's swept axes, as seen from one of its jobs."""
    marker = Path(sweep_dir) / SWEPT_FILE
    return tuple(marker.read_text().split()) if marker.is_file() else ()


def parent_run_id(sweep_dir: str | Path) -> str | None:
    """The running study's parent run id, as seen from one of its jobs."""
    if os.environ.get(PARENT_ENV):
        return os.environ[PARENT_ENV]
    marker = Path(sweep_dir) / PARENT_FILE
    return marker.read_text().strip() if marker.is_file() else None


def search_problem(config: DictConfig) -> str | None:
    """Why a search (a sweeper that optimises what the jobs return: Optuna's has a direction)
    must not start, or None. Without a validation split the jobs would return a test metric,
    and the search would tune on the test set; a loss must be minimised."""
    direction = config.hydra.sweeper.get("direction")
    if direction is None:
        return None  # a grid or a list of runs: nothing is optimised
    if not has_validation(config.data):
        return ("This search optimises what each trial returns, and with data.val_fraction=0 "
                "that is a test-set metric: the search would tune on the test set. Set "
                "data.val_fraction > 0 (e.g. 0.1) so that trials return their validation metric.")
    if (swept := space_without_validation(config)) is not None:
        return (f"This search's space holds data.val_fraction=0 ({swept}): a trial there would "
                "return a test-set metric, and the search would tune on the test set. Keep "
                "data.val_fraction above 0 in the space (e.g. interval(0.05, 0.3)).")
    wanted = "minimize" if config.selection_metric.endswith("loss") else "maximize"
    if isinstance(direction, str) and direction != wanted:
        return (f"selection_metric={config.selection_metric} is to be {wanted}d, but the search's "
                f"direction is {direction}: add hydra.sweeper.direction={wanted}.")
    return None


def original_axes(origin: str | None) -> list[str]:
    """The swept axes of the study a reproduction runs again, so its runs are named as the
    original's; [] for anything else (a run, an output folder, no reproduction)."""
    if not origin or not origin.isalnum():
        return []
    from retino.tracking.runs import run_tags

    try:
        return run_tags(origin).get(SWEPT_TAG, "").split()
    except Exception:  # noqa: BLE001 - the names only: the reproduction's own axes then
        return []


class StudyCallback(Callback):
    """Parent run at the start of a multirun; report and verdict at its end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from retino.tracking.runs import start_parent_run

        if (problem := search_problem(config)) is not None:
            # Before the first trial and any MLflow run. SystemExit, not an exception: Hydra
            # turns a callback's exception into a warning and would run the search anyway.
            log.error("%s", problem)
            raise SystemExit(2)
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        axes = original_axes(os.environ.get(REPRODUCES_ENV)) or swept_axes(config)
        tags = {STUDY_TAG: study_name(config), COMMAND_TAG: " ".join(sys.argv),
                OVERRIDES_TAG: " ".join(config.hydra.overrides.task) or "(none)",
                GIT_COMMIT_TAG: git_commit(), CODE_VERSION_TAG: code_version(),
                OUTPUT_DIR_TAG: str(sweep_dir), SWEPT_TAG: " ".join(axes)}
        for env, tag in ((REPRODUCES_ENV, REPRODUCES_TAG), (BUNDLE_ENV, BUNDLE_TAG),
                         (ALLOWED_CHANGES_ENV, ALLOWED_CHANGES_TAG)):  # python -m retino.reproduce
            if os.environ.get(env):
                tags[tag] = os.environ[env]
        run_id = start_parent_run(config.experiment, study_name(config), tags)
        os.environ[PARENT_ENV] = run_id  # first: from here on, study_guard can end it
        (sweep_dir / PARENT_FILE).write_text(run_id + "\n")
        (sweep_dir / SWEPT_FILE).write_text("".join(f"{key}\n" for key in axes))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from retino.studies.study_report import study_title, write_report
        from retino.tracking.records import read_runs
        from retino.tracking.runs import end_run

        run_id = os.environ.get(PARENT_ENV)
        if run_id is None:
            return
        runs, files = [], []
        try:
            runs = read_runs(parent_id=run_id)
            folder = Path(config.hydra.sweep.dir).resolve() / "report"
            # the sweep's plots, not its runs': a run reused from an earlier sweep kept its own
            files = write_report(runs, folder, study_title(study_name(config), runs),
                                 draw=bool(config.get("plots", True)))
            log.info("Study report: %s (MLflow parent run %s)", folder / PAGE_FILE, run_id)
            if config.get("register_model"):
                _register(runs, config.register_model, run_id)
            describe_study(run_id, folder / RESULTS_FILE, folder / PAGE_FILE)
        finally:  # the parent ends even when the report cannot be written
            failed = [run for run in runs if run.status != FINISHED]
            end_run(run_id, FAILED if failed or not files else FINISHED, files)
            os.environ.pop(PARENT_ENV, None)
        if failed:
            for run in failed:
                log.error("FAILED %s (%s): %s", run.name, run.run_id, run.tags.get(ERROR_TAG, "?"))
            log.error("%d of %d jobs failed.", len(failed), len(runs))
            sys.exit(1)  # after the report: the finished jobs' results are kept


def _register(runs: list, name: str, study: str) -> None:
    """The study's best configuration into the Model Registry; a failure there is logged and
    keeps the study's results (register later with python -m retino.report --register)."""
    from retino.studies.model_registry import register_best

    try:
        register_best(runs, name, study)
    except Exception as err:  # noqa: BLE001 - the study's runs and report stand regardless
        log.error("Could not register the study's best model as %s: %s", name, err)


def _interrupted(err: BaseException) -> bool:
    """Ctrl-C, or a signal turned into SystemExit(128 + signal number) by retino.job."""
    return isinstance(err, KeyboardInterrupt) or (
        isinstance(err, SystemExit) and isinstance(err.code, int) and err.code > 128)


@contextmanager
def study_guard() -> Iterator[None]:
    """Around Hydra's main: if a sweep stops early (Ctrl-C, SIGTERM, an exception in the
    sweeper or a launcher), Hydra never calls on_multirun_end; its parent run is ended here,
    KILLED or FAILED, instead of staying RUNNING."""
    try:
        yield
    except BaseException as err:
        run_id = os.environ.pop(PARENT_ENV, None)
        if run_id is not None:
            from retino.tracking.runs import end_run

            status = KILLED if _interrupted(err) else FAILED
            end_run(run_id, status)
            log.error("The study stopped early; its MLflow parent run %s ended %s.", run_id,
                      status)
        raise
