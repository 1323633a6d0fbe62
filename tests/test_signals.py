"""Stop signals: submitit's SIGUSR2 handler made reliable where CPython would drop it."""

import signal
import sys
import time

from retino.signals import redelivered


def __del__(handler):  # noqa: N807 - named as a finalizer, where CPython discards exceptions
    handler(signal.SIGUSR2, sys._getframe())


def test_a_signal_landing_in_a_garbage_collection_callback_is_delivered_again():
    calls = []

    def requeue(signum, frame):  # what submitit does: stop the job by raising SystemExit
        calls.append(frame.f_code.co_name)
        raise SystemExit(144)

    handler = redelivered(requeue)
    previous = signal.signal(signal.SIGUSR2, handler)
    try:
        __del__(handler)  # lands in a finalizer: not handled there ...
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
