"""A multirun is a study: Hydra callbacks that give it a parent MLflow run and a report.

At the start of a sweep, the parent run is created (named after the sweep file, with the command
line and overrides as tags) and its id handed to the jobs (environment and a file in the sweep
folder, so launchers that start new processes find it too); each job's run becomes its child.
At the end, the report (retino.report) is built from the children in the store, attached to the
parent, and the failed jobs are listed; the command then exits non-zero if any failed.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

PARENT_ENV = "RETINO_PARENT_RUN_ID"
PARENT_FILE = ".retino_parent_run"


def study_name(config: DictConfig) -> str:
    """The sweep file's name (`-cn comparison`), or 'sweep' for a plain `run.py -m ...`."""
    name = config.hydra.job.config_name
    return "sweep" if name in (None, "config") else str(name)


def parent_run_id(sweep_dir: str | Path) -> str | None:
    """The running study's parent run id, as seen from one of its jobs."""
    if os.environ.get(PARENT_ENV):
        return os.environ[PARENT_ENV]
    marker = Path(sweep_dir) / PARENT_FILE
    return marker.read_text().strip() if marker.is_file() else None


class StudyCallback(Callback):
    """Parent run at the start of a multirun; report and verdict at its end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from retino.tracking import git_commit, start_parent_run

        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        tags = {"study": study_name(config), "command": " ".join(sys.argv),
                "hydra_overrides": " ".join(config.hydra.overrides.task) or "(none)",
                "git_commit": git_commit(), "output_dir": str(sweep_dir)}
        run_id = start_parent_run(config.experiment, study_name(config), tags)
        (sweep_dir / PARENT_FILE).write_text(run_id + "\n")
        os.environ[PARENT_ENV] = run_id

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from retino.report import write_report
        from retino.tracking import end_run, read_runs

        run_id = os.environ.pop(PARENT_ENV, None)
        if run_id is None:
            return
        runs = read_runs(parent_id=run_id)
        failed = [run for run in runs if run.status != "FINISHED"]
        folder = Path(config.hydra.sweep.dir).resolve() / "report"
        files = write_report(runs, folder, f"{study_name(config)}: {len(runs)} runs")
        end_run(run_id, "FAILED" if failed else "FINISHED", files)
        log.info("Study report: %s (MLflow parent run %s)", folder, run_id)
        if failed:
            for run in failed:
                log.error("FAILED %s (%s): %s", run.name, run.run_id, run.tags.get("error", "?"))
            log.error("%d of %d jobs failed.", len(failed), len(runs))
            sys.exit(1)  # after the report: the finished jobs' results are kept
