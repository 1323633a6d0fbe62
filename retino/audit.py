"""Audit a data set before trusting a score on it: the same photograph under two names (within and
across splits), the grades such copies disagree on, and what a model scores without looking at
the retina.

    python -m retino.audit [OVERRIDES ...] [--out DIR] [--workers N] [--no-mlflow]

OVERRIDES are run.py's (data=kaggle data.root=/data/aptos/center_crop-512px, data.val_fraction,
data.folds ...): the audit reads the splits a run with them would train, validate and test on.
It writes audit.md and audit.html (figures inline), survey.csv (one row per photograph: its
properties and content fingerprint), duplicate_groups.csv, fellow_eye_gaps.csv and summary.json to
DIR (default: <data root>/audit, which runs on that data read), and logs them as an MLflow run
tagged data_audit=<data digest> in the runs' experiment. Exit status 0 when written, 2 when the
data or an override is wrong.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from retino.config.registration import composed
from retino.config.validation import validate_config
from retino.core.errors import ConfigError, DataError
from retino.core.names import AUDIT_DIR, AUDIT_REPORT_FILE, SURVEY_FILE
from retino.data.layout import SplitIndex
from retino.data.load.digest import data_identity
from retino.data.load.loaders import locate_dataset, read_index_at
from retino.data.split import with_validation
from retino.evaluation.audit_report import write_audit
from retino.evaluation.data_audit import DataAudit, audit_index
from retino.tracking.audits import log_audit
from retino.training.optimization import registered_choices

log = logging.getLogger(__name__)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m retino.audit",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="run.py's overrides, e.g. data=kaggle "
                        "data.root=/data/aptos/center_crop-512px")
    parser.add_argument("--out", type=Path, default=None,
                        help="the audit's folder (default: <data root>/audit)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes that read the photographs (default: every core)")
    parser.add_argument("--no-mlflow", action="store_true", help="write the files only")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be a positive number of processes, not {args.workers}")
    return args


def audited_splits(cfg: DictConfig) -> tuple[Path, dict[str, SplitIndex]]:
    """(data root, its splits as a run with this config sees them: train, val, test; as the
    CSVs list them where the training split is too small to carve a validation split from)."""
    location = locate_dataset(cfg.data)
    listed = read_index_at(location)
    try:
        return location.root, with_validation(listed, cfg.data.val_fraction, cfg.data.val_seed,
                                              cfg.data.get("folds"), cfg.data.get("fold", 0))
    except DataError as err:
        log.info("Audited as the CSVs list the splits (%s)", err)
        return location.root, listed


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    try:
        cfg = composed(args.overrides)
        validate_config(cfg, registered_choices())
        root, index = audited_splits(cfg)
        identity = data_identity(root)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rounds = cfg.bootstrap_rounds  # of the kappa interval (0: none)
    out = args.out or root / AUDIT_DIR
    audit = audit_index(index, root, out / SURVEY_FILE, args.workers, cfg.seed,
                        cfg.max_megapixels, rounds)
    files = write_audit(audit, out, identity.digest, root)
    where = f"Report: {out / AUDIT_REPORT_FILE} (and .html)."
    if not args.no_mlflow:
        params = {f"data.{k}": v for k, v in OmegaConf.to_container(cfg.data).items()}
        run_id = log_audit(cfg.experiment, identity, params, audit.metrics(), files,
                           files[0].read_text())
        where += f" MLflow run {run_id} (tagged data_audit={identity.digest})."
    log.info("%s\n%s", headline(audit), where)
    return 0


def headline(audit: DataAudit) -> str:
    """What the audit found, in three lines."""
    counts = audit.group_counts()
    floor = audit.floor.sentence() if audit.floor else "too few patients for the shortcut floor"
    return (f"{len(audit.table)} photographs: {counts['duplicate_groups']} group(s) of one "
            f"photograph, {counts['groups_across_splits']} across splits, "
            f"{counts['conflicting_groups']} with conflicting grades (accuracy ceiling "
            f"{100 * audit.ceiling:.1f} %); {len(audit.unreadable)} unreadable file(s).\n"
            f"{floor[0].upper()}{floor[1:]}.")


if __name__ == "__main__":
    sys.exit(main())
