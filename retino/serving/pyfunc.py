"""A trained run as an MLflow model: `mlflow.pyfunc.load_model("runs:/<id>/model")` and
`mlflow models serve -m runs:/<id>/model --env-manager local` grade photographs.

The model carries the run's weights, config and operating point, and retino's own code, so it
applies the run's preprocessing exactly as `python -m retino.predict` does (it calls the same
grade()). Input: a DataFrame with an `image` column, each cell a photograph's file bytes in
base64 (any format the preprocessing reads: JPEG, PNG, TIFF). Output: one row per photograph
with `gradable`, `quality_reason` and `quality_score` (and the measures behind it,
`quality_*`), `predicted`, `p0`..`p4`, `p_referable` (a regression head: `output`), `referable` (at
the run's operating point)
and `error` (empty when read; the reason otherwise). A photograph that cannot be read or is not
gradable has no grade, probabilities or flag.

A cross-validated study's fold ensemble is one such model too (save_ensemble_grader): the K fold
runs' weights in one model, answering with their mean, with the same input and output columns.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel, PythonModelContext, save_model
from mlflow.types import ColSpec, Schema
from omegaconf import OmegaConf

from retino import PROJECT_ROOT
from retino.core.grades import OUTPUT_COLUMN, PROBABILITY_COLUMNS, REFERABLE_PROBABILITY_COLUMN
from retino.core.names import CONFIG_FILE, ENSEMBLE_MODEL_DIR, GRADER_FILE, MODEL_DIR
from retino.serving.grader import (
    QUALITY_MEASURES,
    Engine,
    Preprocessing,
    TrainedRun,
    ensemble_engine,
    grade,
    judgement_on,
    run_from_folder,
)
from retino.training.devices import resolve_device

log = logging.getLogger(__name__)
PACKAGE_DIR = Path(__file__).resolve().parent.parent  # retino/: the code the model carries

def signature(regression: bool = False) -> ModelSignature:
    """The model's input and output columns (a regression head answers with its output where
    the others give probabilities)."""
    answers = [OUTPUT_COLUMN] if regression else \
        [*PROBABILITY_COLUMNS, REFERABLE_PROBABILITY_COLUMN]
    return ModelSignature(
        inputs=Schema([ColSpec("string", "image")]),
        outputs=Schema([ColSpec("boolean", "gradable"), ColSpec("string", "quality_reason"),
                        ColSpec("double", "quality_score"),
                        *(ColSpec("double", column) for column in QUALITY_MEASURES),
                        ColSpec("long", "predicted"),
                        *(ColSpec("double", column) for column in answers),
                        ColSpec("long", "referable"), ColSpec("string", "error")]))


def _judged_run(context: PythonModelContext, weights: Path) -> TrainedRun:
    """The model's config, preprocessing and operating point (grader.yaml), with weights."""
    grader = OmegaConf.load(context.artifacts["grader"])
    preprocessing = (Preprocessing(grader.method, grader.size) if grader.method else None)
    cuts = grader.get("cuts")
    return TrainedRun(grader.source, OmegaConf.load(context.artifacts["config"]), weights,
                      preprocessing, float(grader.threshold),
                      bool(grader.get("threshold_chosen", True)), tuple(cuts) if cuts else None)


class FundusGrader(PythonModel):
    """retino.serving.grader's grade() behind MLflow's pyfunc interface."""

    engine: Engine | None = None  # None: grade() runs the run's own PyTorch model

    def load_context(self, context: PythonModelContext) -> None:
        self.run = _judged_run(context, Path(context.artifacts["weights"]))
        self.device = resolve_device("auto")

    def predict(self, context: PythonModelContext, model_input: pd.DataFrame,
                params: dict | None = None) -> pd.DataFrame:
        with tempfile.TemporaryDirectory(prefix="retino-serve-") as folder:
            paths = [_as_file(cell, Path(folder) / f"row{k}")
                     for k, cell in enumerate(model_input["image"])]
            frame = grade(self.run, paths, self.device, engine=self.engine)
            # an error names the request's row, not where this server keeps its files
            frame["error"] = frame["error"].str.replace(f"{folder}{os.sep}", "request ",
                                                         regex=False)
        return strict_json_frame(frame.drop(columns="image"))


class FoldEnsembleGrader(FundusGrader):
    """A fold ensemble: the K fold models' mean answers, judged at the operating point (and a
    regression head's cut points) chosen on their out-of-fold predictions. The members share
    one configuration, so the first fold's config stands for all (its preprocessing, quality
    checks, resolution and test-time flips); only their weights differ."""

    def load_context(self, context: PythonModelContext) -> None:
        members = OmegaConf.load(context.artifacts["grader"]).members
        weights = [Path(context.artifacts[f"weights_{k}"]) for k in range(len(members))]
        self.run = _judged_run(context, weights[0])
        self.device = resolve_device("auto")
        self.engine = ensemble_engine([replace(self.run, source=str(member), weights=path)
                                       for member, path in zip(members, weights, strict=True)],
                                      self.device)


def strict_json_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with every missing value None: MLflow's server writes a float nan as a bare
    `NaN`, which strict JSON parsers (a browser's JSON.parse) refuse, losing the whole
    response; None is written `null`."""
    return frame.astype(object).where(frame.notna(), None)


def _as_file(cell: object, path: Path) -> Path:
    """A cell's photograph written to path (an unreadable cell leaves an empty file, which
    grade() reports as such instead of failing the whole request)."""
    try:
        data = cell if isinstance(cell, bytes) else base64.b64decode(str(cell), validate=True)
    except (binascii.Error, ValueError):
        data = b""
    path.write_bytes(data)
    return path


def encode_image(path: Path) -> str:
    """A photograph as the model's input cell: its file bytes in base64."""
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def pip_requirements() -> list[str]:
    """The project's pinned runtime requirements: what the model's code imports."""
    listed = PROJECT_ROOT / "requirements.txt"
    if not listed.is_file():
        return ["torch", "torchvision", "mlflow", "omegaconf", "opencv-python-headless",
                "numpy", "pandas", "scikit-learn", "pillow", "tqdm"]
    return [line.split("#")[0].strip() for line in listed.read_text().splitlines()
            if line.split("#")[0].strip()]


def _grader_yaml(run: TrainedRun, path: Path, **more: object) -> Path:
    """grader.yaml: what the model judges photographs with besides its config and weights."""
    method, size = (run.preprocessing.method, run.preprocessing.size) if run.preprocessing \
        else (None, None)
    path.write_text(OmegaConf.to_yaml({"source": run.source, "method": method, "size": size,
                                       "threshold": run.threshold,
                                       "threshold_chosen": run.threshold_chosen,
                                       "cuts": list(run.cuts) if run.cuts else None, **more}))
    return path


def save_grader(run_dir: Path, example: Path) -> Path:
    """The finished run in run_dir (config.yaml, model_state.pt, predictions_val.csv) saved as
    an MLflow model in run_dir/model, with a signature and `example` as its input example."""
    run = run_from_folder(run_dir)
    grader = _grader_yaml(run, run_dir / GRADER_FILE)
    target = run_dir / MODEL_DIR
    if target.exists():  # a resumed run saves its final model again
        shutil.rmtree(target)
    with _pickled_with_its_code():
        save_model(str(target), python_model=FundusGrader(),
                   artifacts={"config": str(run_dir / CONFIG_FILE),
                              "weights": str(run.weights), "grader": str(grader)},
                   code_paths=[str(PACKAGE_DIR)],
                   signature=signature(run.regression),
                   input_example=pd.DataFrame({"image": [encode_image(example)]}),
                   pip_requirements=pip_requirements())
    return target


def save_ensemble_grader(members: Sequence[TrainedRun], out_of_fold: pd.DataFrame,
                         folder: Path, example: pd.DataFrame | None = None) -> Path:
    """A configuration's fold runs (each with its config and weights; source: its run id) saved
    as one MLflow model in folder/ensemble_model: all K weights, the first fold's config, and
    the operating point (and a regression head's cut points) chosen on the out-of-fold
    predictions on the ensemble's scale, as the study's report chose them (CrossValidation.
    choosing), never on the test set's labels."""
    first = members[0]
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / CONFIG_FILE
    OmegaConf.save(first.cfg, config)
    ensemble = replace(first, source=f"fold ensemble of {len(members)} runs",
                       **judgement_on(first.cfg, out_of_fold))
    grader = _grader_yaml(ensemble, folder / GRADER_FILE,
                          members=[member.source for member in members])
    target = folder / ENSEMBLE_MODEL_DIR
    with _pickled_with_its_code():
        save_model(str(target), python_model=FoldEnsembleGrader(),
                   artifacts={"config": str(config), "grader": str(grader),
                              **{f"weights_{k}": str(member.weights)
                                 for k, member in enumerate(members)}},
                   code_paths=[str(PACKAGE_DIR)], signature=signature(first.regression),
                   input_example=example, pip_requirements=pip_requirements())
    return target


class _NotTheCloudpickleWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(CLOUDPICKLE_WARNING)


CLOUDPICKLE_WARNING = "Passing a Python object as `python_model`"  # MLflow's, on every save


@contextmanager
def _pickled_with_its_code() -> Iterator[None]:
    """MLflow warns, on every save of a model given as a Python object, that its pickle can run
    code when loaded: true of every MLflow pyfunc model, and said once here in retino's words
    instead of as a run's last console line."""
    mlflow_log = logging.getLogger("mlflow.pyfunc")
    quiet = _NotTheCloudpickleWarning()
    mlflow_log.addFilter(quiet)
    try:
        yield
    finally:
        mlflow_log.removeFilter(quiet)
    log.info("The MLflow model holds retino's grader pickled with its code: load or serve it "
             "only from a store you trust (docs/security.md).")
