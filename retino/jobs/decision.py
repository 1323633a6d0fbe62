"""What a job does, given the earlier runs of its configuration: skip, resume, start anew, or
refuse because a live process trains that run. A pure function of plain values (the job module
reads the store and the lock files), so the whole table is unit-tested.

| earlier run (newest first)                   | same code and data  | code or data changed |
|----------------------------------------------|---------------------|----------------------|
| any RUNNING with its process alive           | busy: stop          | busy: stop           |
| a FINISHED one, in a sweep                   | skip: reuse it      | (rows below)         |
| the newest is FAILED, KILLED or RUNNING with | resume it           | new                  |
| a dead process, and has a readable last.pt   |                     |                      |
| otherwise (FINISHED outside a sweep, none)   | new                 | new                  |

resume=false always starts a new run (it shares no folder and no MLflow run with any other).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from retino.core.names import FINISHED, RUNNING

SKIP, RESUME, NEW, BUSY = "skip", "resume", "new", "busy"


@dataclass(frozen=True)
class JobIdentity:
    """Config, code and data of a job; two runs with equal identities compute the same thing."""

    config_hash: str
    code_version: str
    data_digest: str


@dataclass(frozen=True)
class EarlierRun:
    """A run of the same config_hash in the experiment, as the store and its folder show it."""

    run_id: str
    status: str  # MLflow's: RUNNING, FINISHED, FAILED, KILLED, ...
    code_version: str  # "" for runs logged before code versions were recorded
    data_digest: str
    output_dir: str
    has_checkpoint: bool = False  # output_dir/last.pt exists
    holder: dict | None = None  # who holds its job lock; None when no live process does
    objective: float = float("nan")  # its selection_score, what a skipped job returns
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.status == RUNNING and self.holder is not None


@dataclass(frozen=True)
class Decision:
    action: str  # SKIP, RESUME, NEW or BUSY
    reason: str
    run: EarlierRun | None = None  # the run skipped to, resumed, or found busy


def difference(job: JobIdentity, run: EarlierRun) -> str:
    """'' when the run has the job's code and data; else what changed, for the log."""
    changes = []
    if run.code_version != job.code_version:
        changes.append(f"code changed since run {run.run_id}: "
                       f"{run.code_version or 'unrecorded'} → {job.code_version}")
    if run.data_digest != job.data_digest:
        changes.append(f"data changed since run {run.run_id}: "
                       f"{run.data_digest or 'unrecorded'} → {job.data_digest}")
    return "; ".join(changes)


def _busy(run: EarlierRun) -> Decision:
    holder = run.holder or {}
    return Decision(BUSY, f"this configuration is being trained right now as MLflow run "
                          f"{run.run_id} (host {holder.get('host', '?')}, process "
                          f"{holder.get('pid', '?')}). Wait for it to end, or stop that "
                          "process; resume=false starts a separate new run.", run)


def _same_finished(job: JobIdentity, earlier: list[EarlierRun]) -> EarlierRun | None:
    return next((run for run in earlier if run.status == FINISHED and not difference(job, run)),
                None)


def _resumable(job: JobIdentity, latest: EarlierRun) -> Decision:
    changed = difference(job, latest)
    if changed:
        return Decision(NEW, f"run {latest.run_id} was interrupted, but {changed}; training "
                             "anew rather than continuing it")
    return Decision(RESUME, f"continuing run {latest.run_id} ({latest.status}, interrupted) "
                            "from its last.pt", latest)


def decide(job: JobIdentity, earlier: list[EarlierRun], resume: bool,
           in_sweep: bool) -> Decision:
    """What this job does; earlier holds the runs of its config_hash, newest first."""
    if not resume:
        return Decision(NEW, "resume=false: a new run, whatever ran before")
    live = next((run for run in earlier if run.alive), None)
    if live is not None:
        return _busy(live)
    same = _same_finished(job, earlier) if in_sweep else None
    if same is not None:
        return Decision(SKIP, f"already FINISHED as MLflow run {same.run_id} with the same "
                              "config, code and data (resume=false runs it again)", same)
    latest = earlier[0] if earlier else None
    if latest is not None and latest.status != FINISHED and latest.has_checkpoint:
        return _resumable(job, latest)
    finished = next((run for run in earlier if run.status == FINISHED), None)
    if finished is None:
        return Decision(NEW, "no earlier run to continue" if earlier
                        else "no earlier run of this configuration")
    if not in_sweep:
        return Decision(NEW, "a single run always trains (sweeps skip FINISHED configurations)")
    return Decision(NEW, difference(job, finished) + "; training anew")
