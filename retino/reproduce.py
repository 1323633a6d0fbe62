"""Re-run a logged run, or a whole study, from what was logged.

    python -m retino.reproduce RUN_ID [extra overrides ...]
    python -m retino.reproduce outputs/2026-11-28/17-35-16-123456
    python -m retino.reproduce STUDY_PARENT_RUN_ID [extra overrides ...]
    python -m retino.reproduce study.zip [--allow-code-change] [--allow-data-change] [overrides]

A run: its logged config (the `config.yaml` artifact, or the folder's `.hydra/config.yaml`) is
turned back into one override per leaf, so `run.py` recomposes exactly that config; the new run
is fresh (resume=false) and tagged `reproduces=<run id>`. With deterministic=true on a CPU the
metrics are equal to the original's.

A study (a sweep's parent run): every FINISHED run of it is re-run, in one multirun whose jobs
each load one logged config (written as an option of a `reproduce` config group); the new study's
parent is tagged `reproduces=<study id>`, each job `reproduces=<its original run>`, and the new
study's report sets original and reproduced metrics side by side.

Either way, a warning says when the code version now differs from the one recorded.

A study bundle (python -m retino.bundle export), on another machine and store: every file is
checked against the bundle's manifest; the code version against this checkout's and the data's
digest against the data the overrides point at (data.root=...), each refused with what to do
unless allowed (--allow-code-change, --allow-data-change: recorded on the new study). The study
is imported into the store, run again as above, and each configuration gets a verdict:
identical, reproduced or differs (docs/reproducibility.md, "For reviewers").
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from retino.core.errors import RetinoError
from retino.studies.reproduction import reproduce, reproduce_bundle

ALLOW_CODE, ALLOW_DATA = "--allow-code-change", "--allow-data-change"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = sys.argv[1:] if argv is None else argv
    allow_code, allow_data = (flag in args for flag in (ALLOW_CODE, ALLOW_DATA))
    args = [arg for arg in args if arg not in (ALLOW_CODE, ALLOW_DATA)]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args else 2
    try:
        if Path(args[0]).is_file():
            return reproduce_bundle(Path(args[0]), args[1:], allow_code, allow_data)
        return reproduce(args[0], args[1:])
    except RetinoError as err:
        logging.getLogger("retino.reproduce").error("%s", err)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
