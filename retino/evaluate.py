"""External validation: evaluate a trained run on another labelled set, logged beside it.

    python -m retino.evaluate RUN data=kaggle data.root=/data/messidor2/center_crop-512px

RUN is an MLflow run id (or a run's output folder). The overrides are Hydra's: the data group and
its keys choose the set (any prepared cache; its test split is evaluated — a set prepared with
`--split none` is all test), and device, batch_size, precision, bootstrap_rounds may change how
it runs; the model, its preprocessing and its referable operating point are the run's own.

A new MLflow run in the trained run's experiment holds the result, tagged evaluates=<run id>:
the same headline metrics as a training run (accuracy, kappa, per-grade and referable-DR
metrics with their intervals), the confusion matrix and ROC figures and the predictions file,
so that external-validation results sit beside the training runs in `mlflow ui`.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from retino import PROJECT_ROOT
from retino.config import validate_config
from retino.data.layout import read_split_index
from retino.data.loaders import (
    cache_params,
    evaluation_loader,
    locate_dataset,
    resolve_num_workers,
)
from retino.devices import resolve_device
from retino.errors import ConfigError, DataError
from retino.evaluation import (
    PROBABILITY_COLUMNS,
    headline_metrics,
    majority_baseline,
    predictions_frame,
)
from retino.files import atomic_write_text
from retino.identity import data_identity
from retino.metrics import REFERABLE_GRADE, at_threshold, confusion_matrix
from retino.plots import plot_confusion_matrix, plot_referable_roc
from retino.precision import resolve_step_settings
from retino.predict import TrainedRun, load_trained_run, trained_model
from retino.train import evaluate

log = logging.getLogger(__name__)
HOW_IT_RUNS = ("device", "batch_size", "precision", "channels_last", "bootstrap_rounds")


def _override_key(override: str) -> str:
    key, sep, _ = override.partition("=")
    if not sep:
        raise ConfigError(f"{override!r} is not an override: write key=value, e.g. "
                          "data=kaggle data.root=/path/to/prepared/set.")
    return key.lstrip("+~")


def evaluation_config(trained: DictConfig, overrides: list[str]) -> DictConfig:
    """The run's config with its data (and how it runs) replaced as the overrides say, composed
    by Hydra from conf/ so that a typo lists the valid choices as run.py does."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    from retino.config import register_configs
    from retino.experiment import registered_choices

    keys = [_override_key(o) for o in overrides]
    foreign = [k for k in keys if k != "data" and not k.startswith("data.")
               and k not in HOW_IT_RUNS]
    if foreign:
        raise ConfigError(f"Cannot override {', '.join(foreign)} here: an evaluation uses the "
                          "trained run's model. Override data, data.* and "
                          f"{', '.join(HOW_IT_RUNS)}.")
    base = [] if "data" in keys else [f"data={trained.data.name}"]
    register_configs()
    try:
        with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
            composed = compose(config_name="config", overrides=base + list(overrides))
    except HydraException as err:  # an unknown group option lists the valid ones
        raise ConfigError(str(err)) from err
    cfg = OmegaConf.create(OmegaConf.to_container(trained, resolve=True))
    cfg.data = composed.data
    for key in set(keys) & set(HOW_IT_RUNS):
        OmegaConf.update(cfg, key, OmegaConf.select(composed, key))
    validate_config(cfg, registered_choices())
    return cfg


def external_metrics(test, cfg: DictConfig, threshold: float) -> dict[str, float]:
    """A training run's headline keys, on the new set; the referable flag at the trained run's
    own operating point (never one chosen on the set being evaluated)."""
    metrics = headline_metrics(test, None, cfg.referable_sensitivity_target,
                               cfg.bootstrap_rounds)
    flagged = at_threshold(test["grade"].to_numpy(), test[PROBABILITY_COLUMNS].to_numpy(),
                           threshold, "test_")
    metrics |= {f"{key}_selected": value for key, value in flagged.items()}
    metrics["test_majority_baseline"] = majority_baseline(test)
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
    answers = evaluate(model, loader, device, settings)
    test = predictions_frame(split.paths, answers.true, answers.probs)
    files = [atomic_write_text(out_dir / "predictions_test.csv", test.to_csv(index=False)),
             plot_confusion_matrix(confusion_matrix(test["grade"], test["predicted"]),
                                   out_dir / "confusion_matrix.png",
                                   title=f"{run.source} on {location.root.name}"),
             plot_referable_roc({"test": (test["grade"] >= REFERABLE_GRADE,
                                          test["p_referable"])}, out_dir / "roc_referable.png",
                                title=f"on {location.root.name}: referable DR")]
    return external_metrics(test, cfg, run.threshold), files


def source_experiment(run: TrainedRun) -> tuple[str, str]:
    """(experiment name, run name) of the trained run, for the new run beside it."""
    if Path(run.source).is_dir():
        return run.cfg.experiment, Path(run.source).name
    from retino.tracking import mlflow_client

    client = mlflow_client()
    found = client.get_run(run.source)
    return (client.get_experiment(found.info.experiment_id).name,
            found.info.run_name or run.source)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    from retino.tracking import mlflow_run

    try:
        run = load_trained_run(argv[0])
        cfg = evaluation_config(run.cfg, argv[1:])
        location = locate_dataset(cfg.data)
        identity = data_identity(location.root)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    experiment, name = source_experiment(run)
    params = {"evaluates": run.source, "model.name": cfg.model.name,
              "resolution.size": cfg.resolution.size,
              **{f"data.{k}": v for k, v in OmegaConf.to_container(cfg.data).items()},
              **cache_params(location.root)}
    tags = {"evaluates": run.source, "data_digest": identity.digest}
    with mlflow_run(experiment, f"{name} on {location.root.name}", params, tags) as tracker, \
            tempfile.TemporaryDirectory(prefix="retino-evaluate-") as out:
        tracker.log_dataset(identity)
        metrics, files = evaluate_elsewhere(run, cfg, Path(out))
        tracker.log_metrics(metrics, step=0)
        for path in files:
            tracker.log_artifact(path)
    log.info("%s on %s (%d images): accuracy %.2f%%, QWK %.3f, referable AUC %.3f, "
             "sensitivity %.1f%% / specificity %.1f%% at the run's operating point. Logged as "
             "MLflow run %s (tagged evaluates=%s).", name, location.root,
             identity.sizes.get("test", 0), 100 * metrics["test_acc_selected"],
             metrics["test_qwk_selected"], metrics["test_referable_auc_selected"],
             100 * metrics["test_referable_sensitivity_at_target_selected"],
             100 * metrics["test_referable_specificity_at_target_selected"], tracker.run_id,
             run.source)
    return 0


if __name__ == "__main__":
    sys.exit(main())
