"""File locks (flock) that die with their process: a `kill -9` releases them, so a crashed job
never blocks the next one.

- `exclusive(path)`: wait for, then hold, a lock (short critical sections: deciding what a job
  does, pretraining one CIFAR-10 recipe once).
- `JobLock`: a running job's claim on its output folder, with who holds it (run id, host,
  process) written inside, so that another command for the same run can say who is training it.

flock works between processes of one machine and on most shared file systems (NFS v4 maps it to
POSIX locks); it does not coordinate machines that share only a tracking server.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from retino.core.errors import RetinoError
from retino.core.names import JOB_LOCK_FILE


class RunBusyError(RetinoError):
    """Another live process trains this run."""


LOCK_MODE = 0o664  # group-writable: users of one group share a RETINO_LOCK_DIR


def _open_lock(path: Path) -> IO:
    """The lock file, opened for appending, created group-writable whatever the umask (at 0644
    a second user sharing the lock folder got PermissionError)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, LOCK_MODE)
    try:
        os.fchmod(handle, LOCK_MODE)
    except PermissionError:  # another user's lock file: its owner set its mode
        pass
    return os.fdopen(handle, "a+")


def try_lock(path: Path) -> IO | None:
    """The open, exclusively locked file, or None when another holder has it."""
    handle = _open_lock(path)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold the lock at path while the block runs, waiting for other holders first."""
    with _open_lock(path) as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # closing the file releases it
        yield


def _read_holder(path: Path) -> dict[str, object]:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return {}


def lock_holder(folder: Path) -> dict[str, object] | None:
    """Who holds the job lock of an output folder ({} when it says nothing), or None when no
    live process does."""
    path = Path(folder) / JOB_LOCK_FILE
    if not path.is_file():
        return None
    handle = try_lock(path)
    if handle is None:
        return _read_holder(path)
    handle.close()
    return None


def describe_holder(holder: dict[str, object]) -> str:
    return (f"run {holder.get('run_id', '?')} on host {holder.get('host', '?')}, "
            f"process {holder.get('pid', '?')}")


class JobLock:
    """Held by the job training into a folder, from before its MLflow run starts to its end."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / JOB_LOCK_FILE
        self.handle: IO | None = None

    def acquire(self) -> JobLock:
        self.handle = try_lock(self.path)
        if self.handle is None:
            raise RunBusyError(f"{self.path.parent} is in use by "
                               f"{describe_holder(_read_holder(self.path))}. Wait for it to end, "
                               "or stop that process; resume=false starts a separate new run.")
        self.record(run_id=None)
        return self

    def record(self, run_id: str | None) -> None:
        """Write who holds the lock (read by lock_holder in other processes)."""
        holder = {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(),
                  "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(json.dumps(holder) + "\n")
        self.handle.flush()

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()  # the file stays: deleting it would race with a new holder
            self.handle = None

    def __enter__(self) -> JobLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
