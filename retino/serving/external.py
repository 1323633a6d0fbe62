"""External validation: a trained run scored on another labelled set (the library behind
`python -m retino.evaluate`). The data, and how the evaluation runs, come from Hydra overrides
composed from conf/ (a typo lists the valid choices); the model, its preprocessing and its
referable operating point are the run's own.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from retino.config.registration import composed as composed_config
from retino.config.schema import QualityConfig
from retino.config.validation import validate_config
from retino.core.errors import ConfigError
from retino.core.files import atomic_write_text
from retino.core.grades import GRADE_COLUMN, OUTPUT_COLUMN, PREDICTED_COLUMN, REFERABLE_GRADE
from retino.core.keys import EVALUATION_KEYS
from retino.core.metric_names import TEST_MAJORITY_BASELINE
from retino.core.names import CONFUSION_FIGURE, ROC_FIGURE, SCREENING_FILE, predictions_file
from retino.data.layout import read_split_index
from retino.data.load.loaders import evaluation_loader, locate_dataset, resolve_num_workers
from retino.evaluation.cut_points import grades_from_outputs
from retino.evaluation.metrics import at_threshold, confusion_matrix, referable_scores
from retino.evaluation.plots import plot_confusion_matrix, plot_referable_roc
from retino.evaluation.predictions import (
    headline_metrics,
    honouring_quality,
    majority_baseline,
)
from retino.evaluation.screening import (
    AT_PREDICTED_GRADE,
    OperatingPoint,
    ScreeningReport,
    screening_markdown,
    screening_report,
)
from retino.serving.grader import TrainedRun, quality_settings, trained_model
from retino.tracking.store import mlflow_client
from retino.training.devices import resolve_device
from retino.training.loop import score_split
from retino.training.optimization import registered_choices
from retino.training.precision import resolve_step_settings

log = logging.getLogger(__name__)


def _override_key(override: str) -> str:
    key, sep, _ = override.partition("=")
    if not sep:
        raise ConfigError(f"{override!r} is not an override: write key=value, e.g. "
                          "data=kaggle data.root=/path/to/prepared/set.")
    return key.lstrip("+~")


def evaluation_config(trained: DictConfig, overrides: list[str]) -> DictConfig:
    """The run's config with its data (and how it runs) replaced as the overrides say, composed
    by Hydra from conf/ so that a typo lists the valid choices as run.py does."""
    keys = [_override_key(o) for o in overrides]
    foreign = [k for k in keys if k != "data" and not k.startswith("data.")
               and k not in EVALUATION_KEYS]
    if foreign:
        raise ConfigError(f"Cannot override {', '.join(foreign)} here: an evaluation uses the "
                          "trained run's model. Override data, data.* and "
                          f"{', '.join(sorted(EVALUATION_KEYS))}.")
    base = [] if "data" in keys else [f"data={trained.data.name}"]
    composed = composed_config(base + list(overrides))  # a typo lists the valid choices
    cfg = OmegaConf.create(OmegaConf.to_container(trained, resolve=True))
    cfg.data = composed.data
    # A run made before today's quality measures holds thresholds of older ones: judged as
    # predict judges it (today's defaults for what it lacks or holds on an older scale).
    cfg.quality = OmegaConf.structured(quality_settings(cfg) or QualityConfig(name="off"))
    for key in set(keys) & EVALUATION_KEYS:
        OmegaConf.update(cfg, key, OmegaConf.select(composed, key))
    validate_config(cfg, registered_choices())
    return cfg


def external_screening(test, cfg: DictConfig, run: TrainedRun) -> ScreeningReport:
    """The screening report on the new set at the trained run's own operating point (never
    one chosen on the set being evaluated; the predicted grade when the run has none), with
    the set's imageability where its quality was assessed."""
    point = OperatingPoint("sensitivity target", "at_target", run.threshold,
                           "the trained run's own, chosen on its validation split") \
        if run.threshold_chosen else AT_PREDICTED_GRADE
    return screening_report(test, None, cfg.referable_sensitivity_target,
                            cfg.referable_specificity_target, points=[point],
                            programme_prevalence=cfg.get("programme_prevalence"))


def external_metrics(test, cfg: DictConfig, run: TrainedRun,
                     screening: ScreeningReport) -> dict[str, float]:
    """A training run's headline keys, on the new set, and its screening numbers; the
    referable flag at the trained run's own operating point."""
    metrics = headline_metrics(test, None, cfg.referable_sensitivity_target,
                               cfg.bootstrap_rounds)
    if run.threshold_chosen:
        flagged = at_threshold(test[GRADE_COLUMN].to_numpy(), referable_scores(test), run.threshold,
                               "test_")
        metrics |= {f"{key}_selected": value for key, value in flagged.items()}
    metrics |= screening.metrics("test")
    metrics[TEST_MAJORITY_BASELINE] = majority_baseline(test)
    return metrics


def evaluate_elsewhere(run: TrainedRun, cfg: DictConfig, out_dir: Path) -> tuple[dict, list]:
    """(metrics, files) of the run's model on the test split of cfg's data."""
    location = locate_dataset(cfg.data)
    split = read_split_index(location.root, location.image_dir, "test")
    device = resolve_device(cfg.device)
    settings = resolve_step_settings(cfg.precision, cfg.channels_last, 0.0, device)
    model = settings.prepare(trained_model(run, device), device)
    workers = resolve_num_workers(cfg.data.num_workers, feeds_gpu=device.type == "cuda")
    loader = evaluation_loader(split, cfg.resolution.size, cfg.batch_size, workers,
                               decode=cfg.data.decode)
    test = honouring_quality(score_split(model, loader, device, settings,
                                         cfg.get("tta", "none") == "flips"),
                             cfg.quality.name if "quality" in cfg else "heuristic")
    if run.cuts:  # a regression head's grades, cut where its own validation split put them
        test = test.assign(predicted=grades_from_outputs(test[OUTPUT_COLUMN], run.cuts))
    screening = external_screening(test, cfg, run)
    files = [atomic_write_text(out_dir / predictions_file("test"), test.to_csv(index=False)),
             atomic_write_text(out_dir / SCREENING_FILE, screening_markdown(screening)),
             plot_confusion_matrix(confusion_matrix(test[GRADE_COLUMN], test[PREDICTED_COLUMN]),
                                   out_dir / CONFUSION_FIGURE,
                                   title=f"{run.source} on {location.root.name}"),
             plot_referable_roc({"test": (test[GRADE_COLUMN] >= REFERABLE_GRADE,
                                          referable_scores(test))}, out_dir / ROC_FIGURE,
                                title=f"on {location.root.name}: referable DR")]
    return external_metrics(test, cfg, run, screening), files


def source_experiment(run: TrainedRun) -> tuple[str, str]:
    """(experiment name, run name) of the trained run, for the new run beside it."""
    if Path(run.source).is_dir():
        return run.cfg.experiment, Path(run.source).name
    client = mlflow_client()
    found = client.get_run(run.source)
    return (client.get_experiment(found.info.experiment_id).name,
            found.info.run_name or run.source)
