"""Export a trained run's model for software that cannot run Python's PyTorch: ONNX or
TorchScript, with the normalisation and the head's post-processing inside.

    python -m retino.export RUN --format onnx|torchscript --out FILE [--tolerance 1e-4]

RUN is an MLflow run id (in the store MLFLOW_TRACKING_URI names, else ./mlflow.db) or a run's
output folder, loaded as retino.predict loads it. The file takes a batch of RGB uint8 images at
the run's resolution, NCHW (B, 3, S, S), and returns the five grade probabilities and
P(referable) (a regression head's run: its output, the grade as a number); its metadata says so,
with the run's operating point (and cut points). The export checks itself: it runs the file
(onnxruntime; torch.jit.load) against the PyTorch model on the run's test images (a seeded
random batch where they are not on this machine) at two batch sizes and prints the largest
difference. Exit status: 0 when written, 1 when the check refused the file (not kept), 2 when
the run cannot be found or onnx/onnxruntime are not installed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from retino.core.errors import ConfigError
from retino.serving.grader import load_trained_run
from retino.serving.portable import DEFAULT_TOLERANCE, EXPORT_FORMATS, ExportMismatch, export_run

log = logging.getLogger(__name__)
REFUSED = 1  # exit status: the exported file did not answer as the model does; not kept


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m retino.export",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="an MLflow run id, or a run's output folder")
    parser.add_argument("--format", default="onnx", choices=list(EXPORT_FORMATS))
    parser.add_argument("--out", type=Path,
                        help="the file to write (default: grader.onnx or grader.pt)")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help="largest absolute difference from the PyTorch model accepted")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    out = args.out or Path(EXPORT_FORMATS[args.format].default_file)
    try:
        run = load_trained_run(args.run)
        done = export_run(run, args.format, out, args.tolerance)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ExportMismatch as err:
        print(f"error: refused, {err}; no file written to {out}.", file=sys.stderr)
        return REFUSED
    check = done.check
    log.info("Exported run %s as %s to %s (%.1f MB, %.1f s). Checked against the PyTorch model "
             "on %s at batch sizes %s: largest absolute difference %.3g (tolerance %g).",
             run.source, args.format, out, done.size_mb, done.seconds, check.images,
             " and ".join(map(str, check.batch_sizes)), check.max_difference, args.tolerance)
    return 0


if __name__ == "__main__":
    sys.exit(main())
