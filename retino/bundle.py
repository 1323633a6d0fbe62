"""A study as one file a reviewer takes home, and that file back into a store.

    python -m retino.bundle export STUDY_PARENT_RUN_ID --out study.zip [--weights] [--photographs]
    python -m retino.bundle import study.zip

export writes the study's evidence into one zip: every finished run's composed config, code
version, git commit and data digest, its metrics, predictions files and report; the study's
report; the data's split CSVs and cache manifest; the weights only with --weights; the
activation maps (test photographs under a heat map) and the run pages showing them only with
--photographs. Each file's checksum is in the bundle's manifest, and its id is their digest.

import puts the study into the store MLFLOW_TRACKING_URI names (else ./mlflow.db) as ended runs
tagged imported_from=<the author's run id> and bundle=<its id>, without running anything, so
`mlflow ui` shows it and `python -m retino.report --parent <its id>` rebuilds its report. To
run it again: `python -m retino.reproduce study.zip`. Exit status 2 when the bundle is refused.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from retino.core.errors import RetinoError

log = logging.getLogger("retino.bundle")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m retino.bundle", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="a study's evidence as one zip file")
    export.add_argument("study", help="the study's parent run id (mlflow ui, or the sweep's "
                                      "parent_run_id file)")
    export.add_argument("--out", type=Path, required=True, help="the zip file to write")
    export.add_argument("--weights", action="store_true",
                        help="add each run's weights (model_state.pt)")
    export.add_argument("--photographs", action="store_true",
                        help="add each run's activation maps, which show test photographs, and "
                             "the run page that shows them (left out otherwise: data licences "
                             "and patients' privacy)")
    imported = commands.add_parser("import", help="a bundle's study into this store, as it ran")
    imported.add_argument("bundle", type=Path)
    return parser


def _export(args: argparse.Namespace) -> None:
    from retino.studies.study_bundle import export_bundle

    done = export_bundle(args.study, args.out, args.weights, args.photographs)
    left = f"; left out, not finished: {', '.join(done.left_out)}" if done.left_out else ""
    print(f"Wrote {done.path}: bundle {done.bundle_id}, {done.runs} runs, "
          f"{done.size / 1e6:.1f} MB{left}.")
    print(f"A reviewer runs it again with: python -m retino.reproduce {done.path.name}")


def _import(args: argparse.Namespace) -> None:
    from retino.studies.study_bundle import import_bundle, open_bundle
    from retino.tracking.store import default_tracking_uri

    with tempfile.TemporaryDirectory(prefix="retino-bundle-") as tmp:
        bundle = open_bundle(args.bundle, Path(tmp))
        parent, new = import_bundle(bundle)
    said = "Imported" if new else "Already imported:"
    print(f"{said} bundle {bundle.bundle_id} ({len(bundle.runs)} runs) as study run {parent} "
          f"in {default_tracking_uri()}. Its report again: python -m retino.report --parent "
          f"{parent}")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        (_export if args.command == "export" else _import)(args)
    except RetinoError as err:
        log.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
