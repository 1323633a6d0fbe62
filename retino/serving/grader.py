"""A trained run as a grader: its config, weights, preprocessing and operating point, loaded from
an MLflow run id or an output folder, grading photographs as the run's own evaluation did (the
library behind `python -m retino.predict` and the MLflow model in retino/serving/pyfunc.py).

Each photograph goes through the run's own preprocessing: the method and size of the prepared
cache it trained on (the same crop and the same JPEG encoding as `retino.data.prepare`), then its
resolution and normalisation. An image that cannot be read gets the reason, never stops the rest.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
import sys
import tempfile
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from retino.config.schema import QualityConfig
from retino.core.errors import ConfigError, DataError
from retino.core.grades import (
    GRADE_COLUMN,
    IMAGE_COLUMN,
    NUM_GRADES,
    OUTPUT_COLUMN,
    PREDICTED_COLUMN,
    PROBABILITY_COLUMNS,
    REFERABLE_GRADE,
    REFERABLE_PROBABILITY_COLUMN,
)
from retino.core.names import CONFIG_FILE, WEIGHTS_FILE, predictions_file
from retino.data.layout import read_manifest
from retino.data.load.dataset import build_transform, collate_images, normalize_images, read_rgb
from retino.data.prepare.preprocess import (
    MAX_MEGAPIXELS,
    METHOD_VERSIONS,
    METHODS,
    as_cached,
    decode_photograph,
    inspect_image,
)
from retino.data.prepare.quality import Quality, assess
from retino.evaluation.cam import class_activation_maps, overlay
from retino.evaluation.cut_points import ROUNDING, fit_cut_points, grades_from_outputs
from retino.evaluation.metrics import (
    referable_probability,
    referable_scores,
    threshold_for_sensitivity,
)
from retino.evaluation.predictions import gradable_rows, is_regression_frame, read_predictions
from retino.models import GradingNetwork, build_network
from retino.models.answers import head_answers
from retino.models.pretrained import read_state_dict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preprocessing:
    method: str  # a retino.data.prepare.preprocess method
    size: int


@dataclass(frozen=True)
class TrainedRun:
    """What grading needs from a run: its config, weights, preprocessing and operating point."""

    source: str  # the run id or folder, as given
    cfg: DictConfig
    weights: Path  # model_state.pt
    preprocessing: Preprocessing | None  # None: the run read its images as they are
    threshold: float  # the referable score at or above which an image is flagged
    threshold_chosen: bool = True  # on the run's validation split; else a fallback
    # a regression head's cut points, fitted on its validation split as its run fitted them
    # (None: rounded, or a head with probabilities)
    cuts: tuple[float, ...] | None = None

    @property
    def regression(self) -> bool:
        return head_name(self.cfg) == "regression"


def head_name(cfg: DictConfig) -> str:
    return OmegaConf.select(cfg, "head.name", default="classification")  # older runs: none


# A flag needs a threshold: a run without a validation split (or without a referable image in
# it) has no operating point, and flags P(referable) >= 0.5 (a regression head's output at the
# rounding cut into grade 2, 1.5), saying so.
FALLBACK_THRESHOLD = 0.5


def _fallback_threshold(cfg: DictConfig) -> float:
    if head_name(cfg) == "regression":
        return float(ROUNDING[REFERABLE_GRADE - 1])
    return FALLBACK_THRESHOLD


def operating_point(cfg: DictConfig, val: pd.DataFrame | None) -> tuple[float, bool]:
    """(the run's referable threshold, whether it was chosen on its validation predictions as
    its report did); (the fallback, False) when it has none."""
    threshold = float("nan")
    if val is not None:
        chooses = gradable_rows(val)  # as its report chose it
        threshold = threshold_for_sensitivity(chooses[GRADE_COLUMN].to_numpy(),
                                              referable_scores(chooses),
                                              cfg.referable_sensitivity_target)
    if np.isnan(threshold):
        fallback = _fallback_threshold(cfg)
        log.warning("The run has no operating point chosen on validation: photographs are "
                    "flagged referable at a score >= %.1f.", fallback)
        return fallback, False
    return threshold, True


def judgement(cfg: DictConfig, val_predictions: Path | None) -> dict:
    """What a trained run judges photographs with, from its validation predictions file: its
    operating point (threshold, threshold_chosen) and a regression head's cut points (cuts),
    each derived as the run derived it."""
    val = None
    if val_predictions is not None and val_predictions.is_file():
        val = read_predictions(val_predictions)
    return judgement_on(cfg, val)


def judgement_on(cfg: DictConfig, val: pd.DataFrame | None) -> dict:
    """judgement() from validation predictions in hand: a fold ensemble's are its out-of-fold
    predictions, which its study's report chose its operating point on."""
    threshold, chosen = operating_point(cfg, val)
    cuts = None
    if val is not None and is_regression_frame(val):  # every validation image, as the run
        cuts = tuple(float(c) for c in fit_cut_points(val[GRADE_COLUMN].to_numpy(),
                                                      val[OUTPUT_COLUMN].to_numpy()))
    return {"threshold": threshold, "threshold_chosen": chosen, "cuts": cuts}


def _preprocessing(method: object, size: object, version: object = 1) -> Preprocessing | None:
    """The run's cache's preprocessing; a warning when this code prepares photographs with
    another version of the method than its cache was made with."""
    if not (method and size):
        return None
    current = METHOD_VERSIONS.get(str(method), 1)
    if int(version or 1) != current:
        log.warning("The run's cache was prepared by version %s of %s; this code prepares "
                    "photographs with version %d, so its grades may differ slightly from the "
                    "run's own evaluation.", version, method, current)
    return Preprocessing(str(method), int(size))


def run_from_folder(folder: Path) -> TrainedRun:
    cfg = OmegaConf.load(folder / CONFIG_FILE)
    manifest = read_manifest(Path(cfg.data.root)) if cfg.data.name == "kaggle" else {}
    if cfg.data.name == "kaggle" and not manifest:
        log.warning("No manifest.json in %s (the run's data): its images are taken as prepared "
                    "already, and photographs are only resized to %d px.", cfg.data.root,
                    cfg.resolution.size)
    return TrainedRun(str(folder), cfg, folder / WEIGHTS_FILE,
                      _preprocessing(manifest.get("method"), manifest.get("size"),
                                     manifest.get("method_version", 1)),
                      **judgement(cfg, folder / predictions_file("val")))


def run_from_store(run_id: str) -> TrainedRun:
    # Here, not at the top: grading with a run's folder never waits for MLflow to import.
    from mlflow.exceptions import MlflowException

    from retino.tracking.store import mlflow_client

    try:
        params = mlflow_client().get_run(run_id).data.params
    except MlflowException as err:
        raise ConfigError(f"{run_id} is neither a folder nor a run in the tracking store "
                          f"({err.message.splitlines()[0]}). Give a run id from `mlflow ui` "
                          "(with MLFLOW_TRACKING_URI for another store) or a run's output "
                          "folder.") from err
    folder = Path(tempfile.mkdtemp(prefix="retino-weights-"))
    try:
        run = _downloaded_run(run_id, params, folder)
    except BaseException:  # whatever stops it, nothing is left behind
        shutil.rmtree(folder, ignore_errors=True)
        raise
    # The downloaded weights last as long as the run that grades with them (one predict or
    # evaluate, or a notebook's variable), not until the process exits.
    weakref.finalize(run, shutil.rmtree, folder, ignore_errors=True)
    return run


def _downloaded_run(run_id: str, params: dict[str, str], folder: Path) -> TrainedRun:
    """The run's config and judgement read from the store, its weights downloaded into
    folder."""
    from mlflow.exceptions import MlflowException

    from retino.tracking.runs import download_artifact, read_artifact

    try:
        cfg = read_artifact(run_id, CONFIG_FILE, OmegaConf.load)
        weights = download_artifact(run_id, WEIGHTS_FILE, folder)
    except MlflowException as err:  # a study's parent run, a failed run: no trained model
        raise ConfigError(f"Run {run_id} holds no trained model ({CONFIG_FILE} and "
                          f"{WEIGHTS_FILE}): give a FINISHED training run's id, not a study's "
                          "parent run or a failed run.") from err
    try:
        judged = read_artifact(run_id, predictions_file("val"), lambda val: judgement(cfg, val))
    except MlflowException:
        judged = judgement(cfg, None)  # a run without a validation split
    return TrainedRun(run_id, cfg, weights,
                      _preprocessing(params.get("cache.method"), params.get("cache.size"),
                                     params.get("cache.method_version", 1)), **judged)


def load_trained_run(source: str) -> TrainedRun:
    folder = Path(source).expanduser()
    if folder.is_dir():
        if not (folder / WEIGHTS_FILE).is_file():
            raise ConfigError(f"{folder} holds no {WEIGHTS_FILE}: give a finished run's output "
                              "folder or its MLflow run id.")
        return run_from_folder(folder)
    return run_from_store(source)


def trained_model(run: TrainedRun, device: torch.device) -> GradingNetwork:
    model = build_network(run.cfg.model.name, head_name(run.cfg),
                          OmegaConf.select(run.cfg, "model.arch"))
    model.load_state_dict(read_state_dict(Path(run.weights)))
    return model.to(device).eval()


LIST_SUFFIXES = (".csv", ".txt")  # IMAGES names a list of paths; any other file is a photograph


def _outside(path: Path, excluded: Sequence[Path]) -> bool:
    """Whether path is none of the excluded files and under none of the excluded folders."""
    resolved = path.resolve()
    return not any(resolved == e or e in resolved.parents for e in excluded)


def list_images(source: Path, exclude: Sequence[Path] = ()) -> list[Path]:
    """Every file under a folder (hidden ones, and the excluded files and folders, aside: what
    predict writes itself is never graded), a single photograph, or the paths a CSV lists."""
    excluded = [Path(e).resolve() for e in exclude]
    if source.is_dir():
        return sorted(p for p in source.rglob("*")
                      if p.is_file() and _outside(p, excluded)
                      and not any(part.startswith(".") for part in p.relative_to(source).parts))
    if not source.is_file():
        raise DataError(f"{source} is neither a folder of photographs, a photograph, nor a CSV "
                        "of paths.")
    if source.suffix.lower() not in LIST_SUFFIXES:
        return [source]
    try:
        with source.open(newline="") as f:
            rows = [row for row in csv.reader(f) if row and row[0].strip()]
    except UnicodeDecodeError as err:
        raise DataError(f"{source} is not a text list of paths ({err.reason}); name a folder "
                        "or a photograph instead.") from err
    header = [cell.strip().lower() for cell in rows[0]] if rows else []
    column = next((header.index(name) for name in ("path", "image") if name in header), None)
    cells = [row[column or 0].strip() for row in rows[1:]] if column is not None else \
        [row[0].strip() for row in rows]
    return [p if p.is_absolute() else source.parent / p for p in map(Path, cells)]


# The thresholds whose measure changed when the check learned real cameras (the rim's fit
# replaced the lit corners, focus became a ratio of detail bands, colour gained red / blue):
# a run made before then holds thresholds on the old scales, which mean nothing to the new
# measures, so it is judged by today's defaults for those.
_REMEASURED = ("max_lit_corners", "min_red_ratio", "min_sharpness")


def quality_settings(cfg: DictConfig) -> QualityConfig | None:
    """The run's quality thresholds (today's defaults for those a run made before them lacks,
    or holds on an older measure's scale); None when it says quality=off."""
    given = OmegaConf.to_container(cfg.quality) if "quality" in cfg else {}
    if "max_rim_fit" not in given:  # made before the check learned real cameras
        dropped = {k: v for k, v in given.items() if k in _REMEASURED}
        given = {k: v for k, v in given.items() if k not in _REMEASURED}
        if dropped and given.get("name", "heuristic") != "off":
            log.warning("This run was made before the quality check's measures changed: its "
                        "%s are on older scales, so today's defaults judge its photographs "
                        "(docs/quality.md).", ", ".join(f"quality.{k}={v}"
                                                        for k, v in dropped.items()))
    settings = QualityConfig(**given)
    return None if settings.name == "off" else settings


class Photographs(Dataset):
    """Photographs as the run's model takes them: (uint8 (3, size, size), position, "",
    quality), or (None, position, the reason it could not be read, None), or (None, position,
    "", quality) for a photograph judged not gradable (quality: None when not assessed)."""

    def __init__(self, paths: list[Path], preprocessing: Preprocessing | None, size: int,
                 quality: QualityConfig | None = None,
                 max_megapixels: float = MAX_MEGAPIXELS) -> None:
        self.paths, self.preprocessing, self.quality = paths, preprocessing, quality
        self.max_megapixels = max_megapixels
        self.transform = build_transform(size, train=False)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int, str, Quality | None]:
        try:
            rgb, quality = self.read(self.paths[i])
        except Exception as err:  # noqa: BLE001 - one bad photograph must not stop the rest
            return None, i, str(err) or type(err).__name__, None
        if rgb is None:
            return None, i, "", quality
        return self.transform(torch.from_numpy(rgb).permute(2, 0, 1)), i, "", quality

    def read(self, path: Path) -> tuple[np.ndarray | None, Quality | None]:
        """(the image as the model takes it, or None when not gradable; its quality)."""
        if not path.is_file():
            raise DataError("file not found")
        if self.preprocessing is None:
            inspect_image(path, self.max_megapixels)  # from its header: before any decoding
            rgb = read_rgb(path)
            quality = assess(rgb, self.quality) if self.quality else None
            return (None if quality and not quality.gradable else rgb), quality
        method, size = self.preprocessing.method, self.preprocessing.size
        photograph, _ = decode_photograph(path, size, method, self.max_megapixels)
        quality = assess(photograph, self.quality, bgr=True) if self.quality else None
        if quality and not quality.gradable:
            return None, quality
        # what training read back from the prepared cache
        return as_cached(METHODS[method](photograph, size)), quality


def _collate(batch: list[tuple]) -> tuple:
    """(the gradable images, their positions, (position, reason) of unreadable files,
    (position, quality) of every assessed photograph)."""
    good = [(image, i) for image, i, _, _ in batch if image is not None]
    images = collate_images([(image, 0) for image, _ in good])[0] if good else None
    return (images, [i for _, i in good],
            [(i, reason) for _, i, reason, _ in batch if reason],
            [(i, quality) for _, i, _, quality in batch if quality is not None])


def cam_name(path: Path, root: Path) -> str:
    """An overlay's file name: the photograph's path under the graded folder, folders joined
    by "__", so that same-named photographs of two subfolders keep one overlay each."""
    relative = path.resolve().relative_to(root) if root in path.resolve().parents else \
        Path(path.name)
    return "__".join(relative.with_suffix("").parts) + "_cam.png"


def _write_cams(cam_dir: Path, images: torch.Tensor, maps: np.ndarray,
                paths: list[Path], root: Path) -> None:
    cam_dir.mkdir(parents=True, exist_ok=True)
    rgb = images.permute(0, 2, 3, 1).cpu().numpy()
    for k, path in enumerate(paths):
        cv2.imwrite(str(cam_dir / cam_name(path, root)), overlay(rgb[k], maps[k]))


# What answers a batch of photographs as the model takes them, uint8 (B, 3, S, S): (B, 5) grade
# probabilities, or a regression head's (B, 1) output. The PyTorch model, or an exported file
# (retino.serving.portable.OnnxEngine): the only thing that differs between the two.
Engine = Callable[[torch.Tensor], np.ndarray]


def pytorch_engine(model: GradingNetwork, run: TrainedRun, device: torch.device) -> Engine:
    """The run's model as its own evaluation ran it: normalised, with its test-time flips."""
    tta = run.cfg.get("tta", "none") == "flips"

    def answers(images: torch.Tensor) -> np.ndarray:
        return head_answers(model, normalize_images(images.to(device)), tta).cpu().numpy()
    return answers


def ensemble_engine(members: Sequence[TrainedRun], device: torch.device) -> Engine:
    """A fold ensemble as its study's report scored it: the mean of the member models' answers
    (probabilities, or a regression head's outputs), each model run as pytorch_engine runs it,
    the same mean that evaluation.predictions.ensemble_frame takes of their predictions."""
    engines = [pytorch_engine(trained_model(run, device), run, device) for run in members]

    def answers(images: torch.Tensor) -> np.ndarray:
        return np.mean([engine(images) for engine in engines], axis=0)
    return answers


@torch.inference_mode()
def grade(run: TrainedRun, paths: list[Path], device: torch.device, batch_size: int = 32,
          workers: int = 0, cam_dir: Path | None = None,
          engine: Engine | None = None) -> pd.DataFrame:
    """One row per photograph, in the order given: image, gradable, quality_reason,
    quality_score and the measures behind it (quality_*), predicted, p0..p4, p_referable (a
    regression head: output), referable, error (empty when read). A photograph that cannot be
    read, or is not gradable, has no grade, probabilities or flag. engine: what answers the
    photographs (default: the run's PyTorch model; activation maps need that one)."""
    if engine is not None and cam_dir is not None:
        raise ConfigError("Activation maps need the PyTorch model: leave out --cam, or grade "
                          "with --engine torch.")
    model = trained_model(run, device) if engine is None else None
    engine = engine or pytorch_engine(model, run, device)
    photographs = Photographs(paths, run.preprocessing, run.cfg.resolution.size,
                              quality_settings(run.cfg),
                              run.cfg.get("max_megapixels", MAX_MEGAPIXELS))
    loader = DataLoader(photographs, batch_size=batch_size, num_workers=workers,
                        collate_fn=_collate)
    probs = np.full((len(paths), 1 if run.regression else NUM_GRADES), np.nan)
    errors = [""] * len(paths)
    root = Path(os.path.commonpath([p.resolve().parent for p in paths])) if paths else Path()
    qualities: list[Quality | None] = [None] * len(paths)
    batches = tqdm(loader, desc="grading", disable=not sys.stderr.isatty())
    for images, positions, failed, assessed in batches:
        for i, reason in failed:
            errors[i] = reason
        for i, quality in assessed:
            qualities[i] = quality
        if images is None:
            continue
        probs[positions] = engine(images)
        if cam_dir is None:
            continue
        with torch.inference_mode(False), torch.no_grad():
            maps, _ = class_activation_maps(model, normalize_images(images.to(device)))
        _write_cams(cam_dir, images, maps, [paths[i] for i in positions], root)
    return answers_frame(paths, probs, errors, run.threshold, qualities, run.cuts)


QUALITY_MEASURES = tuple(f"quality_{name}" for name in Quality.__dataclass_fields__
                         if name not in ("gradable", "reason", "score"))


def quality_columns(qualities: list[Quality | None], errors: list[str]) -> pd.DataFrame:
    """gradable (empty for a file that cannot be read; true where quality=off), quality_reason,
    quality_score and every measure (empty where not assessed)."""
    rows = []
    for quality, error in zip(qualities, errors, strict=True):
        if quality is None:
            row = {"gradable": pd.NA if error else True, "quality_reason": ""}
        else:
            row = {"gradable": quality.gradable, "quality_reason": quality.reason,
                   **{f"quality_{k}": v for k, v in quality.measures().items()}}
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["gradable", "quality_reason", "quality_score",
                                        *QUALITY_MEASURES])
    frame["gradable"] = frame["gradable"].astype("boolean")
    return frame


def answers_frame(paths: list[Path], probs: np.ndarray, errors: list[str], threshold: float,
                  qualities: list[Quality | None] | None = None,
                  cuts: tuple[float, ...] | None = None) -> pd.DataFrame:
    """The rows grade() returns, from the answers (N, 5) (a regression head's (N, 1), cut at
    `cuts`, else rounded), nan where a photograph was not graded."""
    frame = pd.DataFrame({IMAGE_COLUMN: [str(p) for p in paths]})
    frame = pd.concat([frame, quality_columns(qualities or [None] * len(paths), errors)], axis=1)
    graded = ~np.isnan(probs).any(axis=1)
    answers = np.nan_to_num(probs)
    if answers.shape[1] == 1:  # a regression head: its output ranks referable DR
        score = answers[:, 0]
        predicted = grades_from_outputs(score, np.asarray(cuts if cuts else ROUNDING))
        frame[PREDICTED_COLUMN] = pd.Series(predicted, dtype="Int64")
        frame[OUTPUT_COLUMN] = probs[:, 0]
    else:
        score = referable_probability(answers)
        frame[PREDICTED_COLUMN] = pd.Series(answers.argmax(axis=1), dtype="Int64")
        frame[PROBABILITY_COLUMNS] = probs
        frame[REFERABLE_PROBABILITY_COLUMN] = np.where(graded, score, np.nan)
    frame["referable"] = pd.Series((score >= threshold).astype(int), dtype="Int64")
    frame.loc[~graded, [PREDICTED_COLUMN, "referable"]] = pd.NA  # skipped: blank, not grade 0
    frame["error"] = errors
    return frame
