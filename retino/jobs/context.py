"""How a job was started (Hydra's facts, as plain values): what run.py hands the lifecycle."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class JobContext:
    """What a job needs to know about how it was started (Hydra's facts, as plain values)."""

    output_dir: Path
    overrides: tuple[str, ...] = ()
    multirun: bool = False
    sweep_dir: Path | None = None
    job_num: int = 0
    parent_run_id: str | None = None  # the study's MLflow run, in a multirun
    reproduces: str | None = None  # the run id this job re-runs (python -m retino.reproduce)
    jobs_at_once: int = 1  # jobs of the sweep running on this machine together (parallel)
    swept: tuple[str, ...] = ()  # the axes the study sweeps: the run's name shows their values
