"""A trained run as a file other software can run: ONNX or TorchScript, with the normalisation and
the head's post-processing inside (the library behind `python -m retino.export`), and the ONNX
file as an engine for `python -m retino.predict --engine onnx`.

The exported model takes what a camera program has: a batch of RGB uint8 images at the run's
resolution, NCHW (B, 3, S, S), 0..255, already preprocessed as the run's cache was (the method
and size in the metadata). It returns the five grade probabilities (B, 5) and P(referable)
(B,) = p2 + p3 + p4; a regression head's run returns its output (B, 1), the grade as a number,
whose grades are the cut points in the metadata. Test-time flips are inside when the run used
them. Every export checks itself against the PyTorch model before it is kept.

onnx, onnxruntime and onnxscript are optional (requirements-export.txt): imported here only when
an export or the ONNX engine needs them.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from retino.core.errors import ConfigError, DataError
from retino.core.grades import OUTPUT_COLUMN, REFERABLE_GRADE
from retino.core.names import GIT_COMMIT_TAG
from retino.core.registry import Registry
from retino.data.layout import read_split_index
from retino.data.load.dataset import IMAGENET_MEAN, IMAGENET_STD, normalize_images
from retino.data.load.loaders import DEFAULT_DEMO_CACHE, evaluation_set, locate_dataset
from retino.data.prepare.demo import demo_folder_name
from retino.models.answers import head_answers
from retino.serving.grader import TrainedRun, head_name, pytorch_engine, trained_model

log = logging.getLogger(__name__)

INPUT_NAME = "images"
INPUT_LAYOUT = "NCHW"  # (batch, 3 RGB channels, height, width)
PROBABILITIES, REFERABLE = "probabilities", "p_referable"  # output names, classification heads
METADATA_FILE = "retino.json"  # TorchScript: the metadata as an extra file of the archive
DEFAULT_TOLERANCE = 1e-4  # largest absolute difference from the PyTorch model an export may have
CHECK_IMAGES = 8  # the larger of the self-check's two batches; the other is a single image
INSTALL = "pip install -r requirements-export.txt"


class ExportMismatch(Exception):
    """The exported file does not answer as the PyTorch model does (beyond the tolerance)."""


def optional_module(name: str) -> ModuleType:
    """An optional dependency of export and the ONNX engine, or an error that says how to get
    it (they stay out of requirements.txt: the GPU check ships that as wheels under a size
    limit, and onnxruntime alone is 28 MB)."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ConfigError(f"{name} is not installed; exporting a model and predict --engine "
                          f"onnx need it: {INSTALL}") from err


class ExportedGrader(nn.Module):
    """The run's network with its normalisation and head post-processing: uint8 RGB images
    (B, 3, S, S) -> ((B, 5) grade probabilities, (B,) P(referable)), or a regression head's
    (B, 1) output."""

    def __init__(self, network: nn.Module, tta: bool, regression: bool) -> None:
        super().__init__()
        self.network, self.tta, self.regression = network, tta, regression
        # the ImageNet statistics as buffers of the file (never normalize_images' cached ones:
        # the exporter would trace those and leave the cache holding traced tensors)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # head_answers: the softmax of a classification head's scores, which is also right for
        # the ordinal head (its log-probabilities); a regression head's output as it is
        normalised = normalize_images(images, statistics=(self.mean, self.std))
        answers = head_answers(self.network, normalised, self.tta)
        if self.regression:
            return (answers,)
        return answers, answers[:, REFERABLE_GRADE:].sum(dim=1)


def output_names(run: TrainedRun) -> list[str]:
    return [OUTPUT_COLUMN] if run.regression else [PROBABILITIES, REFERABLE]


def exported_grader(run: TrainedRun) -> ExportedGrader:
    """The run's PyTorch model as the export wraps it, on the CPU, in eval mode."""
    return ExportedGrader(trained_model(run, torch.device("cpu")),
                          run.cfg.get("tta", "none") == "flips", run.regression).eval()


def _retino_version() -> str:
    try:
        return version("retino")
    except PackageNotFoundError:  # run from a checkout without pip install -e .
        return "unknown"


def export_metadata(run: TrainedRun, training_commit: str = "unknown") -> dict[str, str]:
    """What a program running the file needs to know, as strings (ONNX metadata_props, the
    TorchScript archive's retino.json)."""
    size = int(run.cfg.resolution.size)
    outputs = output_names(run)
    meta = {
        "source": run.source, "model": str(OmegaConf.select(run.cfg, "model.arch")
                                           or run.cfg.model.name),
        "head": head_name(run.cfg), "resolution": str(size),
        "input": f"{INPUT_NAME}: uint8 RGB 0-255, {INPUT_LAYOUT} (batch, 3, {size}, {size}); "
                 "normalisation inside",
        "input_layout": INPUT_LAYOUT, "input_dtype": "uint8",
        "preprocessing": (f"{run.preprocessing.method} at {run.preprocessing.size} px, then "
                          f"resized to {size} px" if run.preprocessing else
                          f"the image resized to {size} px"),
        "outputs": json.dumps(outputs),
        "output_meaning": ("output (batch, 1): the grade as a number; grades: cut at cut_points"
                           if run.regression else "probabilities (batch, 5): P(grade 0..4); "
                           "p_referable (batch,): P(grade >= 2)"),
        "threshold": repr(run.threshold), "threshold_chosen": str(run.threshold_chosen).lower(),
        "tta": str(run.cfg.get("tta", "none")),
        "retino_version": _retino_version(), "training_commit": training_commit,
    }
    if run.regression:
        meta["cut_points"] = json.dumps(list(run.cuts) if run.cuts else [0.5, 1.5, 2.5, 3.5])
    return meta


def _batch_dim() -> torch.export.Dim:
    return torch.export.Dim("batch", min=1, max=1 << 16)


def write_onnx(model: ExportedGrader, example: torch.Tensor, run: TrainedRun,
               metadata: dict[str, str], path: Path) -> None:
    """The model as ONNX (torch's dynamo exporter, a dynamic batch axis, the outputs named for
    the run's head), metadata_props set, validated by onnx.checker."""
    onnx = optional_module("onnx")
    optional_module("onnxscript")  # what torch.onnx's exporter translates with
    program = torch.onnx.export(model, (example,), input_names=[INPUT_NAME],
                                output_names=output_names(run),
                                dynamic_shapes={"images": {0: _batch_dim()}},
                                dynamo=True, verbose=False)
    proto = program.model_proto
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, str(path))


def write_torchscript(model: ExportedGrader, example: torch.Tensor, run: TrainedRun,
                      metadata: dict[str, str], path: Path) -> None:
    """The model traced (the batch size stays free: the self-check runs two), the metadata as an
    extra file."""
    with torch.no_grad(), warnings.catch_warnings():
        # is_regression reads the output's width: fixed for a model, so a constant is right
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, (example,), check_trace=False)
    torch.jit.save(traced, str(path), _extra_files={METADATA_FILE: json.dumps(metadata)})


class OnnxEngine:
    """An exported ONNX file run by onnxruntime on the CPU: uint8 images (B, 3, S, S) -> the
    answers grade() takes, (B, 5) probabilities or (B, 1) a regression head's output."""

    def __init__(self, path: Path) -> None:
        ort = optional_module("onnxruntime")
        if not Path(path).is_file():
            raise ConfigError(f"{path} is not a file: give the .onnx file python -m "
                              "retino.export wrote.")
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {INPUT_NAME: images})

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        return self.run(images.cpu().numpy())[0]

    def check_fits(self, run: TrainedRun) -> None:
        """A file exported from another kind of run (resolution, head) is refused."""
        meta = self.metadata
        wanted = {"resolution": str(run.cfg.resolution.size), "head": head_name(run.cfg),
                  "input_layout": INPUT_LAYOUT}
        wrong = {k: v for k, v in wanted.items() if meta.get(k) != v}
        if wrong:
            raise ConfigError(
                "The ONNX file does not fit the run: " + ", ".join(
                    f"{k} is {meta.get(k)!r} in the file, {v!r} in the run"
                    for k, v in wrong.items()) + ". Export this run: python -m retino.export.")


@dataclass(frozen=True)
class ExportFormat:
    """A format retino exports to: how the model is written, and how the file is run (by what
    its users run it with) for the self-check."""

    default_file: str  # what --out is when not given
    write: Callable[[ExportedGrader, torch.Tensor, TrainedRun, dict[str, str], Path], None]
    run: Callable[[Path, torch.Tensor], list[np.ndarray]]


def _onnx_answers(path: Path, images: torch.Tensor) -> list[np.ndarray]:
    return OnnxEngine(path).run(images.numpy())


def _torchscript_answers(path: Path, images: torch.Tensor) -> list[np.ndarray]:
    loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.inference_mode():
        return [out.numpy() for out in loaded(images)]


# python -m retino.export --format <name>: a new format is one ExportFormat added here
EXPORT_FORMATS: Registry[ExportFormat] = Registry("--format")
EXPORT_FORMATS.add("onnx", ExportFormat("grader.onnx", write_onnx, _onnx_answers))
EXPORT_FORMATS.add("torchscript", ExportFormat("grader.pt", write_torchscript,
                                               _torchscript_answers))


def run_exported(path: Path, fmt: str, images: torch.Tensor) -> list[np.ndarray]:
    """The exported file's outputs for a uint8 batch, run as a user would run it."""
    return EXPORT_FORMATS[fmt].run(path, images)


def run_test_images(run: TrainedRun, count: int) -> torch.Tensor | None:
    """Up to `count` of the run's test images, uint8 (N, 3, S, S) as its evaluation read them,
    where its data is at hand on this machine; None where it is not (a run from elsewhere)."""
    data = run.cfg.data
    if data.name == "demo":  # never generate a demo set only to check an export
        root = Path(data.root or DEFAULT_DEMO_CACHE).expanduser()
        name = demo_folder_name(data.train_size, data.test_size, data.image_size, data.seed)
        if not (root / name / "test_label.csv").is_file():
            return None
    try:
        location = locate_dataset(data)
        split = read_split_index(location.root, location.image_dir, "test")
        images = evaluation_set(split, int(run.cfg.resolution.size))
        return torch.stack([images[i][0] for i in range(min(count, len(images)))])
    except (DataError, ConfigError, OSError) as err:
        log.info("The run's test images are not at hand (%s).", err)
        return None


def check_images(run: TrainedRun, count: int = CHECK_IMAGES) -> tuple[torch.Tensor, str]:
    """(a uint8 batch to check an export on, what it is): the run's test images, else a seeded
    random batch."""
    images = run_test_images(run, count)
    if images is not None and len(images) >= 2:
        return images.contiguous(), f"{len(images)} of the run's test images"
    size = int(run.cfg.resolution.size)
    generator = torch.Generator().manual_seed(0)
    random = torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8,
                           generator=generator)
    return random, f"a seeded random uint8 batch of {count} (the run's test images are not here)"


@dataclass(frozen=True)
class SelfCheck:
    images: str  # what the check ran on
    batch_sizes: tuple[int, ...]
    max_difference: float  # the largest absolute difference over every output and batch


def pytorch_answers(run: TrainedRun) -> Callable[[torch.Tensor], list[np.ndarray]]:
    """The outputs an export must give, computed as retino.predict's PyTorch path computes them
    (not by the exported wrapper: the check then tests the wrapper too)."""
    engine = pytorch_engine(trained_model(run, torch.device("cpu")), run, torch.device("cpu"))

    def outputs(images: torch.Tensor) -> list[np.ndarray]:
        with torch.inference_mode():
            answers = engine(images)
        return [answers] if run.regression else [answers, answers[:, REFERABLE_GRADE:].sum(1)]
    return outputs


def check_export(path: Path, fmt: str, reference: Callable[[torch.Tensor], list[np.ndarray]],
                 images: torch.Tensor, description: str, tolerance: float) -> SelfCheck:
    """Run the file at two batch sizes (a single image, then the whole batch) against the
    PyTorch model's answers (pytorch_answers); ExportMismatch above the tolerance."""
    worst, sizes = 0.0, (1, len(images))
    for size in sizes:
        batch = images[:size]
        expected = reference(batch)
        got = run_exported(path, fmt, batch)
        if [g.shape for g in got] != [e.shape for e in expected]:
            raise ExportMismatch(f"the exported file answers a batch of {size} with shapes "
                                 f"{[g.shape for g in got]}, the model with "
                                 f"{[e.shape for e in expected]}")
        worst = max(worst, *(float(np.abs(g - e).max()) for g, e in zip(got, expected,
                                                                       strict=True)))
    check = SelfCheck(description, sizes, worst)
    if not worst <= tolerance:  # a NaN refuses too
        raise ExportMismatch(f"the exported file differs from the PyTorch model by up to "
                             f"{worst:.3g} on {description} (batches of {sizes[0]} and "
                             f"{sizes[1]}), above the tolerance {tolerance:g}")
    return check


@dataclass(frozen=True)
class Export:
    path: Path
    check: SelfCheck
    seconds: float  # writing and checking
    size_mb: float


def training_commit(run: TrainedRun) -> str:
    """The commit the run trained under, from its tags in the store ('unknown' for a folder)."""
    if Path(run.source).is_dir():
        return "unknown"
    # Here, not at the top: exporting a run's folder never waits for MLflow to import.
    from retino.tracking.store import mlflow_client

    return mlflow_client().get_run(run.source).data.tags.get(GIT_COMMIT_TAG, "unknown")


def export_run(run: TrainedRun, fmt: str, out: Path,
               tolerance: float = DEFAULT_TOLERANCE) -> Export:
    """Write the run's model to `out` in this format and check it; a file that fails its check
    is removed and ExportMismatch raised (an earlier file at `out` is never left half-replaced:
    the export is written beside it and renamed once it passed)."""
    form = EXPORT_FORMATS[fmt]  # an unknown format: ConfigError naming the valid ones
    started = time.perf_counter()
    model = exported_grader(run)
    images, description = check_images(run)
    metadata = export_metadata(run, training_commit(run))
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    try:
        form.write(model, images[:2], run, metadata, partial)
        check = check_export(partial, fmt, pytorch_answers(run), images, description,
                             tolerance)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(out)
    return Export(out, check, time.perf_counter() - started, out.stat().st_size / 1e6)


def read_torchscript_metadata(path: Path) -> dict[str, str]:
    """The metadata of a TorchScript file retino exported."""
    files = {METADATA_FILE: ""}
    torch.jit.load(str(path), map_location="cpu", _extra_files=files)
    return json.loads(files[METADATA_FILE])


def read_onnx_metadata(path: Path) -> dict[str, str]:
    onnx = optional_module("onnx")
    model = onnx.load(str(path), load_external_data=False)
    return {prop.key: prop.value for prop in model.metadata_props}

