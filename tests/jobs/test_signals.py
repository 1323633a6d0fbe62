"""Stop signals: submitit's SIGUSR2 handler made reliable where CPython would drop it."""

import signal
import sys
import time

import pytest

from retino.jobs.signals import redelivered


def __del__(handler):  # noqa: N807 - named as a finalizer, where CPython discards exceptions
    handler(signal.SIGUSR2, sys._getframe())


def waits_on_workers(handler):  # called by a finaliser, as a DataLoader iterator's is
    handler(signal.SIGUSR2, sys._getframe())


class Iterator:
    def __init__(self, handler):
        self.handler = handler

    def __del__(self):
        waits_on_workers(self.handler)


@pytest.mark.parametrize("landing", ["in the finaliser", "in a call it makes"])
def test_a_signal_landing_in_a_garbage_collection_callback_is_delivered_again(landing):
    calls = []

    def requeue(signum, frame):  # what submitit does: stop the job by raising SystemExit
        calls.append(frame.f_code.co_name)
        raise SystemExit(144)

    handler = redelivered(requeue)
    previous = signal.signal(signal.SIGUSR2, handler)
    try:
        if landing == "in the finaliser":
            __del__(handler)  # not handled there ...
        else:
            Iterator(handler)  # collected at once: its __del__ runs the handler, deeper down
        assert calls == []
        stopped = None
        try:
            for _ in range(100):  # ... but a moment later, in ordinary code
                time.sleep(0.01)
        except SystemExit as stop:
            stopped = stop.code
        assert stopped == 144 and len(calls) == 1 and calls[0] != "__del__"
    finally:
        signal.signal(signal.SIGUSR2, previous)


def in_a_store_transaction(handler):
    """Code that runs as SQLAlchemy's own (the filename is what the handler sees)."""
    namespace = {}
    exec(compile("def commit(handler, signal, sys):\n"
                 "    handler(signal.SIGUSR2, sys._getframe())\n",
                 "/site-packages/sqlalchemy/orm/session.py", "exec"), namespace)
    namespace["commit"](handler, signal, sys)


def test_a_signal_landing_in_a_store_transaction_waits_until_it_is_over():
    """Raised mid-commit, the stop would leave that connection holding SQLite's write lock while
    the run's error handling writes through another: every job of the store would wait for ever
    (seen when SIGUSR2 preempted two submitit jobs as they logged their epoch)."""
    calls = []

    def requeue(signum, frame):
        calls.append(frame.f_code.co_filename)
        raise SystemExit(144)

    handler = redelivered(requeue)
    previous = signal.signal(signal.SIGUSR2, handler)
    try:
        in_a_store_transaction(handler)  # returns: the transaction completes
        assert calls == []
        with pytest.raises(SystemExit):
            for _ in range(100):
                time.sleep(0.01)
        assert len(calls) == 1 and "sqlalchemy" not in calls[0]
    finally:
        signal.signal(signal.SIGUSR2, previous)
