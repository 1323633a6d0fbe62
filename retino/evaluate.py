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

from omegaconf import OmegaConf

from retino.core.errors import ConfigError, DataError
from retino.core.metric_names import (
    TEST_ACC,
    TEST_QWK,
    TEST_REFERABLE_AUC,
    screening_key,
    selected,
)
from retino.core.names import DATA_DIGEST_TAG, EVALUATES_TAG
from retino.data.load.digest import data_identity
from retino.data.load.loaders import cache_params, locate_dataset
from retino.serving.external import evaluate_elsewhere, evaluation_config, source_experiment
from retino.serving.grader import load_trained_run
from retino.tracking.runs import mlflow_run

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    try:
        run = load_trained_run(argv[0])
        cfg = evaluation_config(run.cfg, argv[1:])
        location = locate_dataset(cfg.data)
        identity = data_identity(location.root)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    experiment, name = source_experiment(run)
    params = {EVALUATES_TAG: run.source, "model.name": cfg.model.name,
              "resolution.size": cfg.resolution.size,
              **{f"data.{k}": v for k, v in OmegaConf.to_container(cfg.data).items()},
              **cache_params(location.root)}
    tags = {EVALUATES_TAG: run.source, DATA_DIGEST_TAG: identity.digest}
    with mlflow_run(experiment, f"{name} on {location.root.name}", params, tags) as tracker, \
            tempfile.TemporaryDirectory(prefix="retino-evaluate-") as out:
        tracker.log_dataset(identity)
        metrics, files = evaluate_elsewhere(run, cfg, Path(out))
        tracker.log_metrics(metrics, step=0)
        for path in files:
            tracker.log_artifact(path)
    point = "at_target" if run.threshold_chosen else ""  # the predicted grade's, without one
    log.info("%s on %s (%d images): accuracy %.2f%%, QWK %.3f, referable AUC %.3f, "
             "sensitivity %.1f%% / specificity %.1f%% %s. Logged as MLflow run %s (tagged "
             "evaluates=%s).", name, location.root,
             identity.sizes.get("test", 0), 100 * metrics[selected(TEST_ACC)],
             metrics[selected(TEST_QWK)], metrics[selected(TEST_REFERABLE_AUC)],
             100 * metrics[screening_key("sensitivity", point=point)],
             100 * metrics[screening_key("specificity", point=point)],
             "at the run's operating point" if point else "at the predicted grade (the run has no "
             "operating point)", tracker.run_id, run.source)
    return 0


if __name__ == "__main__":
    sys.exit(main())
