"""The training program, shaped like torchvision's references: epoch loop, evaluation, fit."""


import logging
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from retino.core.metric_names import TEST_ACC, TEST_LOSS, TEST_QWK, TRAIN_ACC, TRAIN_LOSS, VAL_QWK
from retino.core.names import CHECKPOINT_FILE
from retino.data.load.loaders import epoch_seed
from retino.evaluation.cut_points import cut_point_metrics, fit_cut_points, grades_from_outputs
from retino.evaluation.metrics import grading_metrics, referable_probability
from retino.evaluation.predictions import predicted_grades, predictions_frame
from retino.models.answers import answers_of, head_answers
from retino.models.heads import grades_by_rounding, is_regression
from retino.training.checkpoint import save_checkpoint
from retino.training.ema import WeightAverage
from retino.training.precision import GradientStep, StepSettings, ahead_on_device
from retino.training.selection import Selection
from retino.training.tracker import NullTracker, Tracker

log = logging.getLogger(__name__)
FP32 = StepSettings()  # exact float32, NCHW: what a call without settings gets


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; optionally force deterministic kernels (slower)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by cuBLAS
    # Set both ways: jobs of a sweep share one process, and one job's choice must not leak.
    torch.use_deterministic_algorithms(deterministic)
    # cuDNN tries its convolution algorithms on the first batch and keeps the fastest (input
    # sizes are fixed here); the choice may differ between runs, so not when deterministic.
    torch.backends.cudnn.benchmark = not deterministic


@contextmanager
def preserved_randomness(cuda: bool = False) -> Iterator[None]:
    """Randomness used inside the block leaves the caller's untouched: the Python, NumPy and
    torch generator states (CUDA's too when the block uses it; asking starts CUDA, so a CPU
    job on a GPU machine does not), and the deterministic-kernel flags."""
    states = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
              torch.cuda.get_rng_state_all() if cuda else None)
    flags = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.benchmark)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if states[3] is not None:
            torch.cuda.set_rng_state_all(states[3])
        torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
        torch.backends.cudnn.benchmark = flags[2]


def seed_epoch(seed: int, epoch: int, loader: DataLoader) -> None:
    """Make epoch e's randomness (shuffle order, augmentation) a function of (seed, e) only, so
    a run resumed from a checkpoint continues exactly as an uninterrupted one would."""
    this_epoch = epoch_seed(seed, epoch)
    random.seed(this_epoch)
    np.random.seed(this_epoch % 2**32)
    torch.manual_seed(this_epoch)
    if loader.generator is not None:  # drives a plain shuffle and new workers' seeds
        loader.generator.manual_seed(this_epoch)
    if hasattr(loader.sampler, "set_epoch"):  # EpochSampler: order and augmentation seeds
        loader.sampler.set_epoch(epoch)


def _progress(loader: DataLoader, desc: str):
    """A progress bar in a terminal; plain iteration in logs and CI (one line per epoch there)."""
    if sys.stderr.isatty():
        return tqdm(loader, desc=desc, leave=False, dynamic_ncols=True)
    return loader


def train_one_epoch(model: nn.Module, loader: DataLoader, criterion: nn.Module,
                    optimizer: torch.optim.Optimizer, device: torch.device, epoch: int,
                    settings: StepSettings = FP32,
                    step: GradientStep | None = None,
                    after_step: Callable[[], None] | None = None) -> dict[str, float]:
    """One pass over the training set (any iterable of batches); returns mean loss and
    accuracy. The sums stay on the device and are read once, at the end: reading them every
    step would make the CPU wait for the GPU before it could queue the next step. after_step
    runs after every optimizer step (the weights' moving average)."""
    model.train()
    step = step or GradientStep(settings, device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    batches = ahead_on_device(_progress(loader, f"epoch {epoch} train"), device)
    for images, grades, *device_params in batches:
        images = settings.images_to(images, device, *device_params)  # (B, 3, H, W)
        grades = grades.to(device, non_blocking=True)  # (B,)
        with settings.autocast(device):
            logits = model(images)  # (B, 5); (B, 1) for a regression head
            loss = criterion(logits.float(), grades)
        step(loss, optimizer)
        if after_step is not None:
            after_step()
        loss_sum += loss.detach().double() * len(grades)
        correct += (_predicted_grades(logits) == grades).sum()
        seen += len(grades)
    return {TRAIN_LOSS: float(loss_sum) / seen, TRAIN_ACC: int(correct) / seen}


def _predicted_grades(outputs: torch.Tensor) -> torch.Tensor:
    """(B,) grades of a batch's outputs: the likeliest, or a regression head's rounded (its
    cut points are fitted on validation after the epoch, not during it)."""
    return grades_by_rounding(outputs) if is_regression(outputs) else outputs.argmax(dim=1)


class Inference(NamedTuple):
    """A model's answers on one split: mean loss, and per image the true grade, the predicted
    grade and the answers behind it: the five grade probabilities, or a regression head's
    output (N, 1), cut into grades by rounding until `cut` gives fitted points."""

    loss: float
    true: np.ndarray  # (N,)
    pred: np.ndarray  # (N,)
    probs: np.ndarray  # (N, 5), rows sum to 1; (N, 1) a regression head's output

    @property
    def regression(self) -> bool:
        return self.probs.shape[1] == 1

    @property
    def referable_score(self) -> np.ndarray:
        """(N,) what ranks referable DR: P(grade >= 2), or a regression head's output."""
        return self.probs[:, 0] if self.regression else referable_probability(self.probs)

    def cut(self, cuts: np.ndarray) -> "Inference":
        """A regression head's answers with its grades cut at these points."""
        return self._replace(pred=grades_from_outputs(self.probs[:, 0], cuts))


def _padded(images: torch.Tensor, size: int, settings: StepSettings) -> torch.Tensor:
    """The short last batch filled up to `size` with blank images (their answers are dropped;
    in eval mode no image affects another's): a compiled model then sees one batch shape and
    compiles no second graph for the tail."""
    blank = images.new_zeros((size - len(images), *images.shape[1:]))
    layout = torch.channels_last if settings.channels_last else torch.contiguous_format
    return torch.cat([images, blank]).contiguous(memory_format=layout)


def _batch_answers(model: nn.Module, images: torch.Tensor, grades: torch.Tensor,
                   tta: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(the batch's answers (B, 5) or (B, 1), its summed loss: cross-entropy, a regression
    head's squared error on the grade; with tta, those of the averaged answers)."""
    count = len(grades)  # a padded batch holds more images
    if tta:
        answers = head_answers(model, images, tta)[:count]
        log_probs = None if is_regression(answers) else answers.clamp_min(1e-12).log()
    else:
        outputs = model(images).float()[:count]
        answers = answers_of(outputs)
        log_probs = None if is_regression(outputs) else outputs.log_softmax(dim=1)
    if log_probs is None:
        return answers, nn.functional.mse_loss(answers[:, 0], grades.float(), reduction="sum")
    return answers, nn.functional.nll_loss(log_probs, grades, reduction="sum")


@torch.inference_mode()
def infer(model: nn.Module, loader: DataLoader, device: torch.device,
          settings: StepSettings = FP32, tta: bool = False) -> Inference:
    """Mean cross-entropy (a regression head's mean squared error) and every image's answers
    over a split, in order (with tta, of the answers averaged over flips).

    The loss is never class-weighted, so test_loss compares across imbalance options."""
    model.eval()
    loss_sum, true, answers = torch.zeros((), device=device), [], []
    for images, grades in ahead_on_device(_progress(loader, "evaluate"), device):
        images = settings.images_to(images, device)
        grades = grades.to(device, non_blocking=True)
        if settings.compile and len(grades) < (loader.batch_size or 0):
            images = _padded(images, loader.batch_size, settings)
        with settings.autocast(device):
            batch, loss = _batch_answers(model, images, grades, tta)
        loss_sum += loss
        true.append(grades)
        answers.append(batch)
    true_arr, answers_arr = torch.cat(true).cpu().numpy(), torch.cat(answers).cpu().numpy()
    return Inference(float(loss_sum) / len(true_arr), true_arr, predicted_grades(answers_arr),
                     answers_arr)


def score_split(model: nn.Module, loader: DataLoader, device: torch.device,
                settings: StepSettings = FP32, tta: bool = False) -> pd.DataFrame:
    """Every image of a split scored by the model: its predictions frame (image, patient, grade,
    predicted, p0..p4, p_referable; output for a regression head, whose grades are then cut
    by predictions.with_cut_points), what files, metrics and reports are computed from."""
    answers = infer(model, loader, device, settings, tta)
    index = loader.dataset.index
    return predictions_frame(index.paths, answers.true, answers.probs, index.patients,
                             index.not_gradable)


def split_metrics(evaluation: Inference, prefix: str) -> dict[str, float]:
    """Loss, grading and referable-DR metrics of one split, keyed `<prefix>name`."""
    return {f"{prefix}loss": evaluation.loss,
            **grading_metrics(evaluation.true, evaluation.pred, prefix,
                              evaluation.referable_score)}


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch
    selection: Selection | None = None  # None without a validation split: the last epoch
    confusion: np.ndarray | None = None  # test counts at the selected epoch, (5, 5)
    selected: dict[str, float] = field(default_factory=dict)  # its headline metrics
    example_image: Path | None = None  # a test photograph: an MLflow model's input example
    screening: str = ""  # the selected epoch's screening report, Markdown
    stopped_epoch: int = 0  # the last epoch trained when early stopping ended it (0: it did not)
    data_audit: str = ""  # what the data's audit says (the run's report shows it), Markdown


def _log_epoch(row: dict[str, float], epochs: int) -> None:
    val = f"  val qwk {row[VAL_QWK]:.3f}" if VAL_QWK in row else ""
    log.info("epoch %d/%d  train loss %.4f acc %.2f%%  test loss %.4f acc %.2f%% qwk %.3f%s  "
             "(%.0fs)", row["epoch"], epochs, row[TRAIN_LOSS], 100 * row[TRAIN_ACC],
             row[TEST_LOSS], 100 * row[TEST_ACC], row[TEST_QWK], val, row["epoch_time_s"])


@dataclass
class Loaders:
    """The splits a run trains on, is tested on, and chooses its epoch on (none: the last)."""

    train: DataLoader
    test: DataLoader
    val: DataLoader | None = None


@dataclass
class Recipe:
    """How a run trains: its loss (possibly class-weighted; it drives training only, reported
    losses are plain), optimizer, schedule, epochs and device, and the options on top."""

    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    epochs: int
    device: torch.device
    settings: StepSettings = FP32  # precision, memory layout, compilation
    seed: int = 0
    patience: int | None = None  # early stopping: epochs without a better validation one
    tta: bool = False  # test-time flips when scoring
    ema: WeightAverage | None = None  # a moving average of the weights, what is evaluated


@dataclass
class StartingPoint:
    """Where training starts: epoch 1, or a resumed run's next epoch with its finished epochs'
    history, gradient scale and selection so far."""

    epoch: int = 1
    history: list[dict[str, float]] = field(default_factory=list)
    scaler_state: dict | None = None
    selection: Selection | None = None


def fit(model: nn.Module, loaders: Loaders, recipe: Recipe, out_dir: Path, config: dict,
        tracker: Tracker | None = None, start: StartingPoint | None = None) -> FitResult:
    """Train for epochs start.epoch..recipe.epochs, evaluating, logging and checkpointing
    (with config) each epoch.

    With a validation loader, the selection (restored on resume) follows the best epoch by its
    metric; with patience, training stops once that many epochs pass without a better one
    (early stopping). With ema, the moving average of the weights is what is evaluated,
    selected and left in the model at the end. start.epoch = epochs + 1 (all trained, files not
    yet written) trains nothing, and so does a resumed run that had already stopped early."""
    start = start or StartingPoint()
    if not 1 <= start.epoch <= recipe.epochs + 1:
        raise ValueError(f"start_epoch={start.epoch} must be within 1..epochs+1="
                         f"{recipe.epochs + 1}.")
    tracker = tracker or NullTracker()
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    settings, device, ema = recipe.settings, recipe.device, recipe.ema
    settings.prepare(model, device)
    criterion = recipe.criterion.to(device)  # class weights, when the loss has them
    runner = settings.compiled(model)  # what the loops call; `model` is what gets saved
    step = GradientStep(settings, device)
    if start.scaler_state:
        step.scaler.load_state_dict(start.scaler_state)
    selection = (start.selection or Selection()) if loaders.val is not None else None
    result = FitResult(history=list(start.history), selection=selection)
    for epoch in range(start.epoch, recipe.epochs + 1):
        if selection is not None and selection.stale(epoch - 1, recipe.patience):
            result.stopped_epoch = epoch - 1
            break
        started = time.perf_counter()
        row: dict[str, float] = {"epoch": epoch}
        seed_epoch(recipe.seed, epoch, loaders.train)
        row |= train_one_epoch(runner, loaders.train, criterion, recipe.optimizer, device, epoch,
                               settings, step, (lambda: ema.update(model)) if ema else None)
        with ema.swapped_in(model) if ema else nullcontext():
            row |= _scored(runner, loaders.test, loaders.val, device, settings, recipe.tta)
            if selection is not None:
                selection.update(row, model)
        row |= {"lr": recipe.optimizer.param_groups[0]["lr"],
                "epoch_time_s": time.perf_counter() - started}
        recipe.scheduler.step()
        result.history.append(row)
        save_checkpoint(Path(out_dir) / CHECKPOINT_FILE, model, recipe.optimizer,
                        recipe.scheduler, epoch, config, result.history,
                        step.scaler.state_dict(), selection, ema.state_dict() if ema else None)
        tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
        _log_epoch(row, recipe.epochs)
    if ema is not None:
        ema.copy_to(model)  # what the run keeps without a validation split: the average
    if result.stopped_epoch:
        _say_stopped(result, recipe.patience, tracker)
    return result


def _scored(runner: nn.Module, test_loader: DataLoader, val_loader: DataLoader | None,
            device: torch.device, settings: StepSettings, tta: bool) -> dict[str, float]:
    """The epoch's test metrics, and validation metrics when there is a validation split; a
    regression head's grades cut at the points fitted on validation (logged, cut_1..cut_4)."""
    test = infer(runner, test_loader, device, settings, tta)
    if val_loader is None:
        return split_metrics(test, "test_")
    val = infer(runner, val_loader, device, settings, tta)
    cuts = {}
    if val.regression:
        fitted = fit_cut_points(val.true, val.referable_score)
        test, val = test.cut(fitted), val.cut(fitted)
        cuts = cut_point_metrics(fitted)
    return split_metrics(test, "test_") | split_metrics(val, "val_") | cuts


def _say_stopped(result: FitResult, patience: int, tracker: Tracker) -> None:
    selection = result.selection
    log.info("Early stopping after epoch %d: %d epochs without a better %s (epoch %d).",
             result.stopped_epoch, patience, selection.metric, selection.epoch)
    tracker.log_metrics({"stopped_epoch": result.stopped_epoch}, step=result.stopped_epoch)
