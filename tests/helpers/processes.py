"""Jobs as processes of a multiprocessing context, each a process of its own."""

from collections.abc import Callable, Sequence
from multiprocessing.context import BaseContext


def exit_codes(context: BaseContext, target: Callable, jobs: Sequence[tuple],
               timeout: float = 300) -> list[int | None]:
    """target(*args) for each args of jobs, in processes started together; their exit codes
    (None: still running after timeout; a traceback goes to stderr). One that hangs is killed,
    not left behind."""
    processes = [context.Process(target=target, args=args, daemon=True) for args in jobs]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join(timeout=timeout)
        return [process.exitcode for process in processes]
    finally:
        for process in processes:
            process.kill()
