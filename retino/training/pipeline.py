"""One run built from a composed config: data -> model -> fit -> predictions -> metrics ->
figures and files, logged through a Tracker. What it optimises (optimizer, schedule, loss) is
built by retino/training/optimization.py, the epochs run in retino/training/loop.py.

Called by the job (retino/jobs/tracked.py) with an MLflow tracker, and by tests with a
NullTracker and a temp folder.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader

from retino.config.naming import run_name
from retino.core.errors import DataError, first_line
from retino.core.files import atomic_write_text, clear_interrupted_writes, csv_text
from retino.core.grades import GRADE_COLUMN, GRADES, PREDICTED_COLUMN, REFERABLE_GRADE
from retino.core.metric_names import (
    ALL_PHOTOGRAPHS,
    GRADABLE_PHOTOGRAPHS,
    SELECTED_EPOCH,
    SELECTION_SCORE,
    TEST_ACC,
    TEST_MAJORITY_BASELINE,
    TEST_QWK,
    TEST_REFERABLE_AUC,
    screening_key,
    selected,
)
from retino.core.names import (
    ACCURACY_FIGURE,
    AUDIT_DIR,
    AUDIT_REPORT_FILE,
    CALIBRATION_FIGURE,
    CAM_FIGURE,
    CHECKPOINT_FILE,
    CHECKPOINT_SET_ASIDE_TAG,
    CONFIG_FILE,
    CONFUSION_CSV,
    CONFUSION_FIGURE,
    COPIES_ACROSS_SPLITS_TAG,
    COST_MACHINE_TAG,
    DECISION_CURVE_FIGURE,
    HISTORY_FILE,
    NEAR_COPIES_TAG,
    NOTE_TAG,
    PAGE_FILE,
    ROC_FIGURE,
    SCREENING_FILE,
    SHARED_PATIENTS_TAG,
    SKIPPED_PHOTOGRAPHS_FILE,
    SKIPPED_PHOTOGRAPHS_TAG,
    SURVEY_FILE,
    WEIGHTS_FILE,
    predictions_file,
)
from retino.core.pages import html_page
from retino.data.layout import SplitIndex
from retino.data.load.dataset import (
    index_problems,
    listed_problems,
    refuse_photographs,
    without_photographs,
)
from retino.data.load.digest import data_identity
from retino.data.load.loaders import (
    cache_params,
    data_loaders,
    locate_dataset,
    read_index_at,
)
from retino.data.prepare.survey import (
    audit_summary,
    copies_between_splits,
    listed_photographs,
    read_originals,
    survey_reusing,
)
from retino.data.split import shared_patients, with_validation
from retino.evaluation.cam import cam_examples
from retino.evaluation.cut_points import cut_point_metrics, cut_points_from
from retino.evaluation.data_audit import audit_quote
from retino.evaluation.metrics import confusion_matrix, referable_scores
from retino.evaluation.plots import (
    plot_accuracy,
    plot_calibration,
    plot_class_activation_maps,
    plot_confusion_matrix,
    plot_decision_curve,
    plot_referable_roc,
)
from retino.evaluation.predictions import (
    gradable_rows,
    headline_metrics,
    honouring_quality,
    is_regression_frame,
    majority_baseline,
    with_cut_points,
)
from retino.evaluation.screening import (
    CALIBRATION_BINS,
    screening_markdown,
    screening_report,
)
from retino.models import GradingNetwork, build_network, freeze_backbone
from retino.models.cost import measure_cost
from retino.models.pretrained import load_backbone_weights
from retino.training.checkpoint import (
    Checkpoint,
    atomic_torch_save,
    cpu_state_dict,
    load_checkpoint,
    read_or_set_aside,
)
from retino.training.cifar10 import ON_CPU, PretrainDevice, RunFactory
from retino.training.devices import resolve_device
from retino.training.ema import WeightAverage
from retino.training.loop import (
    FitResult,
    Loaders,
    Recipe,
    StartingPoint,
    fit,
    score_split,
    seed_everything,
)
from retino.training.optimization import build_criterion, build_optimizer, build_scheduler
from retino.training.precision import StepSettings, resolve_step_settings
from retino.training.selection import Selection
from retino.training.starting_weights import pretrained_weights, untracked_run
from retino.training.tracker import NullTracker, Tracker

log = logging.getLogger(__name__)


def prepare_model(cfg: DictConfig, weights: Path | None = None,
                  load_pretrained: bool = True) -> GradingNetwork:
    """Build the network, load pretrained weights when asked (found here unless given, and not
    at all when a checkpoint will overwrite them), freeze the backbone when asked."""
    model = build_network(cfg.model.name, cfg.head.name, cfg.model.get("arch"))
    if weights is None and load_pretrained:
        weights, _ = pretrained_weights(cfg, untracked_run, ON_CPU)
    if weights is not None:
        load_backbone_weights(model, weights)
    if cfg.freeze.name == "backbone":
        if not cfg.pretrained:
            log.warning("freeze=backbone with pretrained=false trains a head on random features.")
        freeze_backbone(model)
    return model


def write_run_files(result: FitResult, cfg: DictConfig, model: nn.Module,
                    out_dir: Path) -> list[Path]:
    """The run's figures, tables, config and selected weights, as files in out_dir."""
    title = run_name(cfg)
    files = [out_dir / CONFUSION_CSV, out_dir / HISTORY_FILE, out_dir / CONFIG_FILE,
             out_dir / WEIGHTS_FILE]
    if cfg.plots:
        files += [plot_accuracy(result.history, out_dir / ACCURACY_FIGURE,
                                title=f"{title}: accuracy"),
                  plot_confusion_matrix(result.confusion, out_dir / CONFUSION_FIGURE,
                                        title=f"{title}: normalized confusion matrix")]
    counts = [["true\\pred", *(f"grade{g}" for g in GRADES)]]
    counts += [[f"grade{g}", *map(str, row)] for g, row in enumerate(result.confusion)]
    atomic_write_text(out_dir / CONFUSION_CSV, csv_text(counts))
    keys = list(result.history[0])
    table = [keys] + [[f"{row[k]:.6g}" for k in keys] for row in result.history]
    atomic_write_text(out_dir / HISTORY_FILE, csv_text(table))
    atomic_write_text(out_dir / CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))
    atomic_torch_save(out_dir / WEIGHTS_FILE, cpu_state_dict(model))
    return files


def judge_selected(cfg: DictConfig, model: nn.Module, result: FitResult,
                   loaders: dict[str, DataLoader], device: torch.device, settings: StepSettings,
                   out_dir: Path) -> tuple[dict[str, float], list[Path]]:
    """Load the selected epoch's weights into the model (the last epoch's without validation),
    predict every test and validation image, and derive the headline metrics from those
    predictions; (metrics, prediction files)."""
    selection = result.selection
    if selection is not None and selection.weights:
        model.load_state_dict(selection.weights)
    frames, files = {}, []
    for split, loader in loaders.items():
        frames[split] = honouring_quality(
            score_split(model, loader, device, settings, cfg.tta == "flips"), cfg.quality.name)
    frames, cuts = with_cut_points(frames)
    if cuts is None and cfg.head.name == "regression":
        log.warning("head=regression without a validation split: its grades are the rounded "
                    "outputs (no cut points fitted for kappa). Set data.val_fraction > 0.")
    for split, frame in frames.items():
        files.append(atomic_write_text(out_dir / predictions_file(split),
                                       frame.to_csv(index=False)))
    test = frames["test"]
    result.confusion = confusion_matrix(test[GRADE_COLUMN], test[PREDICTED_COLUMN])
    screening = screening_report(test, frames.get("val"), cfg.referable_sensitivity_target,
                                 cfg.referable_specificity_target,
                                 programme_prevalence=cfg.programme_prevalence)
    result.screening = screening_markdown(screening)
    thresholds = {point.name: point.threshold for point in screening.points
                  if not np.isnan(point.threshold)}
    files.append(atomic_write_text(out_dir / SCREENING_FILE, result.screening))
    if cfg.plots:
        files.append(plot_referable_roc(_curves(frames, ALL_PHOTOGRAPHS), out_dir / ROC_FIGURE,
                                        f"{run_name(cfg)}: referable DR", thresholds))
    if cfg.plots and not is_regression_frame(test):  # a regression's output: no probability
        files += _probability_figures(frames, out_dir, run_name(cfg))
    metrics = headline_metrics(test, frames.get("val"), cfg.referable_sensitivity_target,
                               cfg.bootstrap_rounds)
    if cuts is not None:
        metrics |= {f"{key}_selected": value for key, value in cut_point_metrics(cuts).items()}
    metrics |= screening.metrics("test")
    metrics[SELECTED_EPOCH] = selection.epoch if selection else result.history[-1]["epoch"]
    # What a sweeper optimises: never a test metric once there is a validation split.
    metrics[SELECTION_SCORE] = selection.score if selection else result.history[-1][TEST_ACC]
    metrics[TEST_MAJORITY_BASELINE] = majority_baseline(test)
    return metrics, files


def readable_checkpoint(path: Path, tracker: Tracker) -> dict | None:
    """The checkpoint to resume from, or None (train anew) when there is none or it cannot be
    read: then it is set aside as last.pt.corrupt, and the log and the run's
    `checkpoint_set_aside` tag say why (a corrupt last.pt used to stop every re-run)."""
    if not path.is_file():
        return None
    state, why = read_or_set_aside(path)
    if why:
        log.warning("%s: the run trains anew.", why)
        tracker.set_tags({CHECKPOINT_SET_ASIDE_TAG: why})
    return state


def resume_from(state: dict, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler,
                tracker: Tracker) -> Checkpoint:
    """Restore the checkpoint; epochs it holds that never reached MLflow (a kill between the
    checkpoint and the logging) are logged now, so the run's series has no gap."""
    checkpoint = load_checkpoint(state, model, optimizer, scheduler)
    log.info("Resuming from %s after epoch %d", CHECKPOINT_FILE, checkpoint.epoch)
    logged = tracker.logged_steps(TEST_ACC)
    for row in checkpoint.history:
        if row["epoch"] not in logged:
            tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"},
                                step=int(row["epoch"]))
    return checkpoint


def weight_average(cfg: DictConfig, model: nn.Module, start: Checkpoint) -> WeightAverage | None:
    """The moving average of the weights when ema_decay asks for one: started from the model,
    or the resumed run's own average (a resume continues it exactly)."""
    if cfg.ema_decay is None:
        return None
    ema = WeightAverage(model, cfg.ema_decay)
    if start.ema:
        ema.load_state_dict(start.ema)
    return ema


def record_shared_patients(count: int, tracker: Tracker) -> None:
    """Test patients with an eye in training: warned about, and kept on the run (a tag that
    reports show), since fellow eyes usually share a grade and the test set then flatters."""
    tracker.set_tags({SHARED_PATIENTS_TAG: str(count)})
    if count:
        log.warning("%d test patient(s) also have an eye in the training or validation split: "
                    "their fellow eyes usually share a grade, so the test metrics are optimistic. "
                    "Prepare the set with python -m retino.data.prepare to split by patient.",
                    count)


def screened_photographs(listed: dict[str, SplitIndex], cfg: DictConfig, out_dir: Path,
                         tracker: Tracker) -> dict[str, SplitIndex]:
    """A folder's photographs that no prepare checked, each read from its header: any that
    cannot be trained on stops the run naming them all (bad_photographs=refuse), or is left out
    and listed, counted on the run and in skipped_photographs.csv (skip)."""
    problems = index_problems(listed, cfg.max_megapixels)
    if cfg.bad_photographs == "refuse" or not problems:
        refuse_photographs(problems)
        return listed
    log.warning("Training without %d photograph(s) that cannot be read (bad_photographs=skip):%s",
                len(problems), listed_problems(problems))
    table = atomic_write_text(out_dir / SKIPPED_PHOTOGRAPHS_FILE,
                              csv_text([("path", "reason"), *problems]))
    tracker.set_tags({SKIPPED_PHOTOGRAPHS_TAG: str(len(problems))})  # a resumed run may differ
    tracker.log_artifact(table)
    return without_photographs(listed, [path for path, _ in problems])


SHOWN_COPIES = 10  # copies named in one message; the rest counted


SURVEY_WORKERS = 8  # processes, at most, that survey a data set no audit has surveyed


def surveyed_splits(index: dict[str, SplitIndex], root: Path,
                    max_megapixels: float) -> pd.DataFrame:
    """The survey of the splits' photographs: the audit's (<root>/audit/survey.csv) where it
    has them, the rest surveyed now on every core and kept there for the next run (a folder
    this process may not write is surveyed again next time)."""
    kept = root / AUDIT_DIR / SURVEY_FILE
    photos = listed_photographs(index)
    table = survey_reusing(photos, kept, min(os.cpu_count() or 1, SURVEY_WORKERS),
                           max_megapixels, read_originals(root))
    if table.attrs["surveyed_now"]:
        try:
            kept.parent.mkdir(exist_ok=True)
            atomic_write_text(kept, table.to_csv(index=False))
        except OSError as err:
            log.info("The survey of %s's photographs is not kept (%s).", root, first_line(err))
    return table


def check_copies_across_splits(index: dict[str, SplitIndex], cfg: DictConfig, root: Path,
                               tracker: Tracker) -> None:
    """A test (or validation) photograph whose content is in a split the model learns from,
    under another name, stops the run naming both files (copies_across_splits=allow goes on,
    recorded as a tag with the count); near-duplicates across them are warned about and
    counted. The photographs' fingerprints come from the data's audit where it has one."""
    table = surveyed_splits(index, root, cfg.max_megapixels)
    found = copies_between_splits(table, cfg.max_megapixels)
    tracker.set_tags({NEAR_COPIES_TAG: str(found.near)})
    if found.near:
        log.warning("%d pair(s) of near-duplicate photographs (another capture of an eye, or an "
                    "edited copy) lie in two splits; python -m retino.audit lists them.",
                    found.near)
    if not found.copies:
        return
    named = "".join(f"\n  - {held} photograph {name} is {other} photograph {twin}"
                    for held, name, other, twin in found.copies[:SHOWN_COPIES])
    more = len(found.copies) - SHOWN_COPIES
    named += f"\n  ... and {more} more" if more > 0 else ""
    if cfg.copies_across_splits == "allow":
        tracker.set_tags({COPIES_ACROSS_SPLITS_TAG: str(len(found.copies))})
        log.warning("%d photograph(s) held out from training are copies of training photographs "
                    "(copies_across_splits=allow, recorded on the run):%s", len(found.copies),
                    named)
        return
    raise DataError(f"{len(found.copies)} photograph(s) held out from training are the same "
                    f"photograph as one the model learns from, under another name:{named}\n"
                    "Their scores would be memory, not grading. Remove one of each pair from the "
                    "split CSVs (python -m retino.audit lists them all), or set "
                    "copies_across_splits=allow to go on (recorded on the run).")


def starting_model(cfg: DictConfig, device: torch.device, settings: StepSettings,
                   run_factory: RunFactory, tracker: Tracker, resuming: bool) -> GradingNetwork:
    """The network to train, on its device (before the optimizer exists, so a resumed optimizer
    state lands beside it). A resumed run takes its weights from its checkpoint: nothing is
    looked up, downloaded or pretrained for it."""
    if resuming:
        return prepare_model(cfg, load_pretrained=False).to(device)
    on = PretrainDevice(device, replace(settings, compile=False, grad_clip=0.0), cfg.deterministic)
    weights, provenance = pretrained_weights(cfg, run_factory, on)
    tracker.set_tags(provenance)
    return prepare_model(cfg, weights).to(device)


def finish_run(cfg: DictConfig, result: FitResult, model: GradingNetwork, out_dir: Path,
               test_loader: DataLoader, device: torch.device, tracker: Tracker,
               predictions: list[Path]) -> None:
    """The run's files (figures, tables, config, selected weights, activation maps,
    predictions) into the tracker."""
    files = write_run_files(result, cfg, model, out_dir) + predictions
    if cfg.plots and cfg.cam_per_grade > 0:
        examples = cam_examples(model, test_loader.dataset, cfg.cam_per_grade, device,
                                cut_points_from(result.selected, "_selected"))
        if examples:  # none for a network without activation maps (cam_examples says why)
            files.append(plot_class_activation_maps(examples, out_dir / CAM_FIGURE))
    files.append(write_run_page(cfg, result, files, out_dir))
    for path in files:
        tracker.log_artifact(path)
    tracker.set_tags({NOTE_TAG: f"{headline_markdown(cfg, result)}\n\nThe whole report: "
                               f"`{PAGE_FILE}` under Artifacts (on disk: {out_dir / PAGE_FILE})."})
    record_cost(cfg, model, result, tracker)
    chosen = result.selected
    log.info("Selected epoch %d: test accuracy %.2f%% (majority-grade baseline %.2f%%), test QWK "
             "%.3f, referable-DR AUC (all photographs) %.3f", chosen[SELECTED_EPOCH],
             100 * chosen[selected(TEST_ACC)], 100 * chosen[TEST_MAJORITY_BASELINE],
             chosen[selected(TEST_QWK)], chosen[selected(TEST_REFERABLE_AUC)])


def record_cost(cfg: DictConfig, model: nn.Module, result: FitResult, tracker: Tracker) -> None:
    """The selected model's deployment cost (retino/models/cost.py) as cost_* metrics, beside
    the selected epoch's, and the machine its latency was timed on as a tag."""
    if not cfg.measure_cost:
        return
    cost = measure_cost(model, cfg.resolution.size)
    result.selected |= cost.metrics()
    tracker.log_metrics(cost.metrics(), step=int(result.selected[SELECTED_EPOCH]))
    tracker.set_tags({COST_MACHINE_TAG: cost.machine})
    log.info("Cost: %.1fM parameters, %.1f MB, %.2f GFLOPs per image, %.1f ms per image on the "
             "CPU at batch 1 (%s)", cost.params / 1e6, cost.weights_mb, cost.gflops_per_image,
             cost.cpu_ms_per_image_b1, cost.machine)


def _curves(frames: dict[str, pd.DataFrame],
            photographs: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per split, (referable, referable score) of the photographs named (metric_names), the
    label saying which."""
    if photographs == GRADABLE_PHOTOGRAPHS:
        frames = {split: gradable_rows(frame) for split, frame in frames.items()}
    return {f"{split} ({photographs})": (frame[GRADE_COLUMN].to_numpy() >= REFERABLE_GRADE,
                                         referable_scores(frame))
            for split, frame in frames.items()}


def _probability_figures(frames: dict[str, pd.DataFrame], out_dir: Path,
                         name: str) -> list[Path]:
    """The reliability diagram (the same ten bins and photographs as the report's ECE) and
    the decision curve, of the gradable test photographs (and validation's, beside)."""
    curves = _curves(frames, GRADABLE_PHOTOGRAPHS)
    referable, probability = curves[f"test ({GRADABLE_PHOTOGRAPHS})"]
    return [plot_calibration(curves, out_dir / CALIBRATION_FIGURE,
                             f"{name}: calibration of P(referable)", bins=CALIBRATION_BINS),
            plot_decision_curve(referable, probability, out_dir / DECISION_CURVE_FIGURE,
                                f"{name}: test, {GRADABLE_PHOTOGRAPHS}")]


def run_page_markdown(cfg: DictConfig, result: FitResult) -> str:
    """The run's headline and its screening report, for its one-page report."""
    return "\n".join([f"# {run_name(cfg)}", "", headline_markdown(cfg, result), "",
                      result.screening])


def headline_markdown(cfg: DictConfig, result: FitResult) -> str:
    """The run's result in a few lines, each number under its report's name with its 95 %
    interval: the top of report.html, the run's description in MLflow, its last console
    lines."""
    chosen = result.selected

    def value(key: str, scale: float, digits: int, unit: str = "") -> str:
        low, high = (chosen.get(f"{key}_ci_{end}", np.nan) for end in ("low", "high"))
        point = f"{scale * chosen[key]:.{digits}f}{unit}"
        return point if np.isnan(low) else \
            f"{point} [{scale * low:.{digits}f}, {scale * high:.{digits}f}]"

    def rates(point: str) -> str:
        return ", ".join(f"{measure} {value(screening_key(measure, point=point), 100, 1, ' %')}"
                         for measure in ("sensitivity", "specificity"))
    lines = [
        f"- Selected epoch {chosen[SELECTED_EPOCH]:.0f} of {len(result.history)}, by "
        f"`{cfg.selection_metric}`" + ("" if result.selection else " (no validation split: "
                                       "the last epoch)"),
        f"- Test accuracy {value(selected(TEST_ACC), 100, 2, ' %')} (majority-grade baseline "
        f"{100 * chosen[TEST_MAJORITY_BASELINE]:.2f} %)",
        f"- Test quadratic weighted kappa {value(selected(TEST_QWK), 1, 3)}",
        f"- Referable DR (grade ≥ 2), test, {ALL_PHOTOGRAPHS}: AUC "
        f"{value(screening_key('auc'), 1, 3)}"]
    for name, point in (("sensitivity target", "at_target"),
                        ("specificity target", "at_spec_target")):
        if screening_key("sensitivity", point=point) in chosen:
            lines.append(f"  - at the {name} (chosen on validation): {rates(point)}")
    return "\n".join([*lines, *([f"- {result.data_audit}"] if result.data_audit else [])])


def data_audit_line(root: Path) -> str:
    """What the audit of the run's data says of the score without the retina and of its
    copies, or how to get one."""
    summary = audit_summary(root, data_identity(root).digest)
    if summary is None:
        return ("The data has no audit: `python -m retino.audit` with this run's data "
                "overrides shows what a model scores without looking at the retina, and the "
                "copies across splits.")
    return (f"The data's audit ({root / AUDIT_DIR / AUDIT_REPORT_FILE}): "
            f"{audit_quote(summary.get('metrics', {}))}.")


def write_run_page(cfg: DictConfig, result: FitResult, files: list[Path], out_dir: Path) -> Path:
    """report.html: the run on one page, its figures inline."""
    figures = [path for path in files if path.suffix == ".png"]
    return atomic_write_text(out_dir / PAGE_FILE,
                             html_page(run_name(cfg), run_page_markdown(cfg, result), figures))


def train_and_evaluate(cfg: DictConfig, out_dir: Path, tracker: Tracker | None = None,
                       run_factory: RunFactory = untracked_run, resume: bool = False,
                       jobs_at_once: int = 1) -> FitResult:
    """Train and evaluate one configuration; everything it writes lands in out_dir and tracker.
    run_factory opens the tracked run of a CIFAR-10 pretraining, when one is needed; with
    resume, training continues from out_dir/last.pt when it exists. jobs_at_once: jobs sharing
    this machine's shared memory (a parallel sweep's)."""
    tracker = tracker or NullTracker()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cleared := clear_interrupted_writes(out_dir):  # a killed save's, up to 60 MB each
        log.info("Removed %d unfinished file(s) of an interrupted save in %s.", cleared, out_dir)
    seed_everything(cfg.seed, cfg.deterministic)
    device = resolve_device(cfg.device)
    settings = resolve_step_settings(cfg.precision, cfg.channels_last, cfg.grad_clip, device,
                                     cfg.compile)
    # The dataset is checked before any weights are fetched or pretrained, and before training.
    location = locate_dataset(cfg.data)
    listed = read_index_at(location)
    cache = cache_params(location.root)  # which prepared cache this run read
    if not cache and cfg.data.name != "demo":  # a folder of photographs no prepare checked
        listed = screened_photographs(listed, cfg, out_dir, tracker)
    index = with_validation(listed, cfg.data.val_fraction, cfg.data.val_seed,
                            cfg.data.get("folds"), cfg.data.get("fold", 0))
    check_copies_across_splits(index, cfg, location.root, tracker)
    tracker.log_params(cache)
    record_shared_patients(shared_patients(index), tracker)
    state = readable_checkpoint(out_dir / CHECKPOINT_FILE, tracker) if resume else None
    resuming = state is not None
    model = starting_model(cfg, device, settings, run_factory, tracker, resuming)
    train_loader, test_loader, val_loader = data_loaders(cfg, index, device, jobs_at_once)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer)
    start = Checkpoint(0, [], {})
    if resuming:
        start = resume_from(state, model, optimizer, scheduler, tracker)
    ema = weight_average(cfg, model, start)
    recipe = Recipe(build_criterion(cfg, index["train"].grades), optimizer, scheduler,
                    cfg.epochs, device, settings, cfg.seed, cfg.early_stopping_patience,
                    cfg.tta == "flips", ema)
    begin = StartingPoint(start.epoch + 1, start.history, start.scaler,
                          start.selection or Selection(cfg.selection_metric))
    result = fit(model, Loaders(train_loader, test_loader, val_loader), recipe, out_dir,
                 OmegaConf.to_container(cfg, resolve=True), tracker, begin)
    result.data_audit = data_audit_line(location.root)
    loaders = {"test": test_loader} | ({"val": val_loader} if val_loader else {})
    result.selected, predictions = judge_selected(cfg, model, result, loaders, device, settings,
                                                  out_dir)
    tracker.log_metrics(result.selected, step=int(result.selected[SELECTED_EPOCH]))
    finish_run(cfg, result, model, out_dir, test_loader, device, tracker, predictions)
    result.example_image = test_loader.dataset.index.paths[0]
    return result
