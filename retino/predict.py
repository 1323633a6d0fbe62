"""Grade new fundus photographs with a trained run.

    python -m retino.predict RUN IMAGES --out predictions.csv [--cam DIR] [--device auto]
    python -m retino.predict RUN IMAGES --engine onnx FILE   # the run's exported ONNX file

RUN is an MLflow run id (in the store MLFLOW_TRACKING_URI names, else ./mlflow.db) or a run's
output folder (the one holding config.yaml and model_state.pt). IMAGES is a folder of
photographs (every file under it but --out and --cam: predict never grades what it wrote), one
photograph, or a .csv / .txt list of paths (a `path` or `image` column, or one path per line;
relative paths start at the list's folder).

Each photograph goes through the run's own preprocessing: the method and size of the prepared
cache it trained on (the raw camera photograph in, the same crop and the same JPEG encoding as
`retino.data.prepare` out), then its resolution and normalisation. Per image the CSV holds the
predicted grade, the five probabilities, P(referable DR) (grade >= 2) and the referable flag at
the run's operating point (chosen on its validation split; P >= 0.5 without one); a regression
head's run gives its output (the grade as a number) instead of the probabilities. An image that
cannot be read is listed with the reason and never stops the others. --cam writes a
class-activation overlay per image, named by its path under IMAGES (`sub__name_cam.png`).
--engine onnx FILE grades with the run's model exported by
`python -m retino.export` (onnxruntime on the CPU) instead of PyTorch: the same preprocessing,
quality checks, operating point and columns. Exit status: 0 when every image was graded, 3 when some
were skipped, 2 when the run or the images cannot be found.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from retino.core.errors import ConfigError, DataError, RetinoError
from retino.core.files import atomic_write_text
from retino.core.grades import IMAGE_COLUMN
from retino.data.load.loaders import resolve_num_workers
from retino.serving.grader import Engine, TrainedRun, grade, list_images, load_trained_run
from retino.training.devices import resolve_device

log = logging.getLogger(__name__)
SOME_SKIPPED = 3  # exit status: graded what could be read, skipped the rest (listed)


def count(text: str, least: int = 1) -> int:
    """An argument that is a whole number of at least `least`, or argparse's one-line error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{value} must be at least {least}")
    return value


def workers(text: str) -> str | int:
    """auto, or a number of loader processes (0: in this process)."""
    return text if text == "auto" else count(text, least=0)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m retino.predict",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="an MLflow run id, or a run's output folder")
    parser.add_argument("images", type=Path, help="a folder of photographs, or a CSV of paths")
    parser.add_argument("--out", type=Path, default=Path("predictions.csv"))
    parser.add_argument("--cam", type=Path, help="write a class-activation overlay per image here")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batch-size", type=count, default=32)
    parser.add_argument("--workers", type=workers, default="auto",
                        help="loader processes, or auto")
    parser.add_argument("--engine", nargs="+", default=["torch"], metavar="ENGINE [FILE]",
                        help="torch (the run's PyTorch model, the default), or onnx FILE: the "
                             "run's model exported by python -m retino.export")
    return parser.parse_args(argv)


def writable_folder(folder: Path, option: str) -> None:
    """ConfigError before any grading when the folder an output goes to is missing or not
    writable (it used to fail after every photograph was graded)."""
    folder = folder if str(folder) else Path(".")
    if not folder.is_dir():
        raise ConfigError(f"{option}: the folder {folder} does not exist; create it first.")
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"{option}: the folder {folder} is not writable.")


def chosen_engine(run: TrainedRun, engine: list[str]) -> Engine | None:
    """None for the PyTorch model; the ONNX file checked against the run (its resolution and
    head) for `onnx FILE`. The run, not the file, gives the threshold, cut points,
    preprocessing and quality settings: the same source as the PyTorch path."""
    if engine == ["torch"]:
        return None
    if len(engine) != 2 or engine[0] != "onnx":
        raise ConfigError(f"--engine {' '.join(engine)} is not valid: give --engine torch or "
                          "--engine onnx FILE.")
    from retino.serving.portable import OnnxEngine  # onnxruntime: optional, imported when asked

    onnx = OnnxEngine(Path(engine[1]))
    onnx.check_fits(run)
    return onnx


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    try:
        writable_folder(args.out.parent, "--out")
        run = load_trained_run(args.run)
        paths = list_images(args.images, exclude=[args.out, *([args.cam] if args.cam else [])])
        engine = chosen_engine(run, args.engine)
        if engine is not None and args.cam:
            raise ConfigError("--cam needs the PyTorch model: leave out --engine onnx.")
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    device = resolve_device(args.device)
    loaders = resolve_num_workers(args.workers, feeds_gpu=device.type == "cuda")
    try:
        frame = grade(run, paths, device, args.batch_size, loaders, args.cam, engine)
    except RetinoError as err:  # its weights unreadable: one line, not a traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    atomic_write_text(args.out, frame.to_csv(index=False))
    skipped = frame[frame["error"] != ""]
    ungradable = frame[frame["gradable"].eq(False)]
    how = (f"{run.preprocessing.method} at {run.preprocessing.size} px" if run.preprocessing
           else "as they are")
    log.info("Graded %d of %d photographs with run %s%s (preprocessed %s, %d px); %d not "
             "gradable; %d flagged referable (%s >= %.3f%s). Written to %s.",
             len(frame) - len(skipped) - len(ungradable), len(frame), run.source,
             f" exported as {args.engine[1]}" if engine else "", how,
             run.cfg.resolution.size, len(ungradable), int(frame["referable"].sum()),
             "output" if run.regression else "P", run.threshold,
             "" if run.threshold_chosen else ", no operating point chosen", args.out)
    for image, reason in ungradable[[IMAGE_COLUMN, "quality_reason"]].itertuples(index=False):
        log.warning("Not gradable %s: %s", image, reason)
    for image, reason in skipped[[IMAGE_COLUMN, "error"]].itertuples(index=False):
        log.warning("Skipped %s: %s", image, reason)
    return SOME_SKIPPED if len(skipped) else 0


if __name__ == "__main__":
    sys.exit(main())
