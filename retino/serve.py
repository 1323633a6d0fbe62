"""Serve a trained run's MLflow model over HTTP, each request's body bounded.

    python -m retino.serve MODEL [--host 127.0.0.1] [--port 5001] [--max-request-mb 50]

MODEL is an MLflow model URI (runs:/<run id>/model, models:/<name>/<version>, a model folder).
The endpoints and the JSON are those of `mlflow models serve` (POST /invocations, GET /ping);
what this command adds is the limit: a request whose body passes --max-request-mb is answered
413 before it is read, where MLflow's server reads any body whole into memory. Each photograph
in a request is bounded by the run's max_megapixels before it is decoded. Exit status 2 when the
model cannot be loaded.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from retino.core.errors import first_line
from retino.jobs.signals import handle_stop_signals
from retino.serving.server import DEFAULT_MAX_REQUEST_MB, scoring_app


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m retino.serve",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="an MLflow model URI, e.g. runs:/<run id>/model")
    parser.add_argument("--host", default="127.0.0.1",
                        help="the address to listen on (0.0.0.0: every network; put a proxy "
                             "with TLS and authentication in front, see docs/security.md)")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--max-request-mb", type=_positive, default=DEFAULT_MAX_REQUEST_MB,
                        help="the largest request body accepted, in MB (default %(default)g)")
    return parser.parse_args(argv)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of MB")
    return value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds, as in a job (uvicorn, which takes it while serving, raises it again once
    # shut down): the process removes the model's copy on its way out, even while it loads.
    handle_stop_signals()
    with tempfile.TemporaryDirectory(prefix="retino-serve-") as folder:  # the model's copy
        try:
            app = scoring_app(args.model, args.max_request_mb, folder)
        except Exception as err:  # MLflow raises its own and OS errors for a missing model
            print(f"error: cannot load the model {args.model}: {first_line(err)}",
                  file=sys.stderr)
            return 2
        import uvicorn  # installed with MLflow, which serves with it

        uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
