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
"""

from __future__ import annotations

import base64
import binascii
import logging
import shutil
import tempfile
from pathlib import Path

import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel, PythonModelContext, save_model
from mlflow.types import ColSpec, Schema
from omegaconf import OmegaConf

from retino import PROJECT_ROOT
from retino.core.grades import OUTPUT_COLUMN, PROBABILITY_COLUMNS, REFERABLE_PROBABILITY_COLUMN
from retino.core.names import CONFIG_FILE, GRADER_FILE, MODEL_DIR
from retino.serving.grader import (
    QUALITY_MEASURES,
    Preprocessing,
    TrainedRun,
    grade,
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


class FundusGrader(PythonModel):
    """retino.serving.grader's grade() behind MLflow's pyfunc interface."""

    def load_context(self, context: PythonModelContext) -> None:
        grader = OmegaConf.load(context.artifacts["grader"])
        preprocessing = (Preprocessing(grader.method, grader.size) if grader.method else None)
        cuts = grader.get("cuts")
        self.run = TrainedRun(grader.source, OmegaConf.load(context.artifacts["config"]),
                              Path(context.artifacts["weights"]), preprocessing,
                              float(grader.threshold), bool(grader.get("threshold_chosen", True)),
                              tuple(cuts) if cuts else None)
        self.device = resolve_device("auto")

    def predict(self, context: PythonModelContext, model_input: pd.DataFrame,
                params: dict | None = None) -> pd.DataFrame:
        with tempfile.TemporaryDirectory(prefix="retino-serve-") as folder:
            paths = [_as_file(cell, Path(folder) / f"{k:06d}")
                     for k, cell in enumerate(model_input["image"])]
            frame = grade(self.run, paths, self.device)
        return frame.drop(columns="image")


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


def save_grader(run_dir: Path, example: Path) -> Path:
    """The finished run in run_dir (config.yaml, model_state.pt, predictions_val.csv) saved as
    an MLflow model in run_dir/model, with a signature and `example` as its input example."""
    run = run_from_folder(run_dir)
    grader = run_dir / GRADER_FILE
    method, size = (run.preprocessing.method, run.preprocessing.size) if run.preprocessing \
        else (None, None)
    grader.write_text(OmegaConf.to_yaml({"source": run.source, "method": method, "size": size,
                                         "threshold": run.threshold,
                                         "threshold_chosen": run.threshold_chosen,
                                         "cuts": list(run.cuts) if run.cuts else None}))
    target = run_dir / MODEL_DIR
    if target.exists():  # a resumed run saves its final model again
        shutil.rmtree(target)
    save_model(str(target), python_model=FundusGrader(),
               artifacts={"config": str(run_dir / CONFIG_FILE),
                          "weights": str(run.weights), "grader": str(grader)},
               code_paths=[str(PACKAGE_DIR)],
               signature=signature(run.regression),
               input_example=pd.DataFrame({"image": [encode_image(example)]}),
               pip_requirements=pip_requirements())
    return target
