"""How a job takes the signals that stop it.

- SIGTERM (`kill`, a cluster's time limit) unwinds like Ctrl-C, so runs end KILLED, not RUNNING.
- Under submitit (SLURM), SIGTERM is left alone on purpose: SIGUSR2 (before the time limit, or on
  preemption where the cluster sends it) makes submitit checkpoint and requeue the job, which
  then resumes from last.pt. submitit's handler stops the job by raising SystemExit; CPython
  discards an exception raised while it runs a garbage-collection callback ("Exception ignored
  in ... weakref"), so a signal that lands there would be lost and the job would train on until
  it is killed. Such a signal is sent again a moment later instead.
- Neither signal unwinds the job from inside a tracking-store call either: raised in the middle
  of a SQLite transaction, the exception leaves that connection holding the database's write
  lock while the run's error handling writes through another connection, and every job of the
  store waits on it ("database is locked", for ever). It too is sent again a moment later.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

REDELIVERY_DELAY_S = 0.05


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


_CALLBACK_FILES = ("weakref.py", "_weakrefset.py")
_STORE_CODE = (f"{os.sep}sqlalchemy{os.sep}", f"{os.sep}mlflow{os.sep}store{os.sep}")


def _unsafe_to_raise(frame: FrameType | None) -> bool:
    """Whether an exception raised at this frame would reach a finaliser or a weakref callback
    (anywhere up the stack: a DataLoader iterator's __del__ waits on its workers), where CPython
    prints and drops it; or would unwind a tracking-store call mid-transaction."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "__del__" or code.co_filename.endswith(_CALLBACK_FILES):
            return True
        if any(part in code.co_filename for part in _STORE_CODE):
            return True
        frame = frame.f_back
    return False


def redelivered(handler: Callable) -> Callable:
    """handler, but a signal that lands in a garbage-collection callback or in a tracking-store
    call is sent again a moment later."""
    def handle(signum: int, frame: FrameType | None) -> None:
        if _unsafe_to_raise(frame):
            threading.Timer(REDELIVERY_DELAY_S, os.kill, (os.getpid(), signum)).start()
            return
        handler(signum, frame)
    handle.redelivers = True
    return handle


def handle_stop_signals() -> None:
    """SIGTERM ends runs as KILLED; under submitit, its SIGUSR2 handler is made reliable."""
    if threading.current_thread() is not threading.main_thread():
        return  # a thread-based launcher cannot take signals
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        signal.signal(signal.SIGTERM, redelivered(_terminate))
        return
    current = signal.getsignal(signal.SIGUSR2)
    if callable(current) and not getattr(current, "redelivers", False):
        signal.signal(signal.SIGUSR2, redelivered(current))
