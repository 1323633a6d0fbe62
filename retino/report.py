"""Rebuild a study's report from the MLflow store, and register its best model.

    python -m retino.report --parent RUN_ID            # a sweep's parent run (its children)
    python -m retino.report --runs ID1 ID2 ... --out report/
    python -m retino.report --parent RUN_ID --register NAME

What the report holds: retino/studies/study_report.py.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from retino.core.errors import ConfigError
from retino.core.names import STUDY_TAG
from retino.studies.model_registry import register_best
from retino.studies.study_report import study_title, write_report
from retino.tracking.records import read_runs
from retino.tracking.runs import run_tags

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="python -m retino.report",
                                     description="Rebuild a study's report from MLflow.")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--parent", help="a sweep's parent run id: report on its children")
    group.add_argument("--runs", nargs="+", help="run ids to report on")
    parser.add_argument("--out", type=Path, default=Path("report"), help="folder (./report)")
    parser.add_argument("--register", metavar="NAME", help="register the best configuration's "
                        "model (by the validation metric; a cross-validated study: its fold "
                        "ensemble, by the out-of-fold metric) in the Model Registry as NAME")
    args = parser.parse_args(argv)
    runs = read_runs(run_ids=args.runs, parent_id=args.parent)
    if not runs:
        log.error("No runs found (MLflow store: MLFLOW_TRACKING_URI or ./mlflow.db).")
        return 2
    name = run_tags(args.parent).get(STUDY_TAG, "study") if args.parent else "selection"
    files = write_report(runs, args.out, study_title(name, runs))
    log.info("Wrote %s", ", ".join(str(f) for f in files))
    if args.register:
        try:
            register_best(runs, args.register, args.parent)
        except ConfigError as err:
            log.error("%s", err)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
