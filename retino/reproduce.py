"""Re-run a logged run, or a whole study, from what was logged.

    python -m retino.reproduce RUN_ID [extra overrides ...]
    python -m retino.reproduce outputs/2026-11-28/17-35-16-123456
    python -m retino.reproduce STUDY_PARENT_RUN_ID [extra overrides ...]

A run: its logged config (the `config.yaml` artifact, or the folder's `.hydra/config.yaml`) is
turned back into one override per leaf, so `run.py` recomposes exactly that config; the new run
is fresh (resume=false) and tagged `reproduces=<run id>`. With deterministic=true on a CPU the
metrics are equal to the original's.

A study (a sweep's parent run): every FINISHED run of it is re-run, in one multirun whose jobs
each load one logged config (written as an option of a `reproduce` config group); the new study's
parent is tagged `reproduces=<study id>`, each job `reproduces=<its original run>`, and the new
study's report sets original and reproduced metrics side by side.

Either way, a warning says when the code version now differs from the one recorded.
"""

from __future__ import annotations

import logging
import sys

from retino.core.errors import RetinoError
from retino.studies.reproduction import reproduce


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args else 2
    try:
        return reproduce(args[0], args[1:])
    except RetinoError as err:
        logging.getLogger("retino.reproduce").error("%s", err)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
