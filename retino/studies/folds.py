"""Cross-validation in a study's report: each configuration's folds pooled into what a reader
chooses by and what a clinic would get.

- The validation metric over folds, as mean ± std: the choice of a configuration then rests on
  every training image, not on one validation split of a few hundred.
- Out-of-fold metrics: every training image scored once, by the fold model that did not train
  on it (the mean of those models where a configuration ran several seeds).
- The fold ensemble on the test set: the mean answers of the K fold models, with the headline
  metrics, intervals and screening report of a single run. Its operating points (and a
  regression head's cut points) are chosen on the out-of-fold predictions, never on the test
  set: they are the ensemble's validation predictions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from retino.core.files import atomic_write_text
from retino.evaluation.intervals import same_images, seed_interval
from retino.evaluation.predictions import (
    ensemble_frame,
    frame_metrics,
    headline_metrics,
    out_of_fold_frame,
    with_cut_points,
)
from retino.evaluation.screening import screening_markdown, screening_report
from retino.studies.comparison import Configuration

CROSS_VALIDATION_COLUMNS = [
    "configuration", "folds", "selection metric over folds (mean ± std)",
    "out-of-fold images", "out-of-fold acc %", "out-of-fold QWK", "out-of-fold referable AUC",
    "single fold models: test acc % (mean ± std)",
    "fold ensemble: test acc % [95 %]", "fold ensemble: test QWK [95 %]",
    "fold ensemble: referable AUC [95 %]",
    "fold ensemble: referable sensitivity % at operating point",
    "fold ensemble: referable specificity % at operating point"]

CROSS_VALIDATION_LEGEND = """\
Each cross-validated configuration pools its folds: the selection metric of each fold's run on
its own validation fold (mean ± std over folds); the out-of-fold metrics, every training image
scored once by the fold model that did not train on it; and the fold ensemble, the mean answers
of the fold models on the test set, with 95 % bootstrap intervals over test patients, at the
operating point chosen on the out-of-fold predictions (the ensemble's validation set; never the
test set). The single models' test accuracy shows what the ensemble adds.
"""


@dataclass
class CrossValidation:
    """One configuration's folds, pooled."""

    label: str
    folds: int  # data.folds: how many the configuration was cut into
    found: list[int]  # the folds that finished
    selection: tuple[str, float, float]  # (metric, mean, std) over the fold runs
    out_of_fold: pd.DataFrame
    ensemble: pd.DataFrame  # the test set, answered by the mean of the fold models
    metrics: dict[str, float]  # the ensemble's headline keys (test_..._selected, oof as val_)
    single_test_acc: tuple[float, float]  # the fold models' own test accuracy: mean, std

    @property
    def complete(self) -> bool:
        return sorted(set(self.found)) == list(range(self.folds))


def cross_validated(configs: list[Configuration]) -> list[Configuration]:
    """The configurations whose runs were cut into folds (data.folds set), each with a
    validation split and predictions files."""
    return [config for config in configs
            if config.params.get("data.folds") not in (None, "", "None")
            and all(run.val is not None for run in config.runs)]


def pool_folds(config: Configuration, target: float, rounds: int) -> CrossValidation:
    """The configuration's folds pooled (see the module's docstring)."""
    runs = config.runs
    metric = runs[0].params.get("selection_metric", "val_qwk")
    scores = [run.final.get(f"{metric}_selected", np.nan) for run in runs]
    frames, cuts = with_cut_points({
        "val": out_of_fold_frame([run.val for run in runs]),
        "test": ensemble_frame(same_images([run.test for run in runs]))})
    single = [run.final.get("test_acc_selected", np.nan) for run in runs]
    metrics = headline_metrics(frames["test"], frames["val"], target, rounds)
    return CrossValidation(config.label, int(float(config.params["data.folds"])),
                           sorted(int(float(run.params.get("data.fold", 0))) for run in runs),
                           (metric, float(np.nanmean(scores)), float(np.nanstd(scores, ddof=1))
                            if len(scores) > 1 else 0.0),
                           frames["val"], frames["test"], metrics,
                           (float(np.nanmean(single)), float(seed_interval(single)[1])))


def _with_interval(metrics: dict[str, float], key: str, scale: float, digits: int) -> str:
    value = scale * metrics.get(f"{key}_selected", np.nan)
    low = metrics.get(f"{key}_selected_ci_low")
    high = metrics.get(f"{key}_selected_ci_high")
    bounds = "" if low is None or np.isnan(low) else \
        f" [{scale * low:.{digits}f}, {scale * high:.{digits}f}]"
    return f"{value:.{digits}f}{bounds}"


def cross_validation_row(pool: CrossValidation) -> list[str]:
    metric, mean, std = pool.selection
    oof = frame_metrics(pool.out_of_fold, "oof_")
    m = pool.metrics
    at = "_at_target" if "test_referable_sensitivity_at_target_selected" in m else ""
    folds = f"{len(pool.found)} of {pool.folds}" + ("" if pool.complete else
                                                    f" (missing: {_missing(pool)})")
    return [pool.label, folds, f"{metric} {mean:.4f} ± {std:.4f}", str(len(pool.out_of_fold)),
            f"{100 * oof['oof_acc']:.2f}", f"{oof['oof_qwk']:.3f}",
            f"{oof['oof_referable_auc']:.3f}",
            f"{100 * pool.single_test_acc[0]:.2f} ± {100 * pool.single_test_acc[1]:.2f}",
            _with_interval(m, "test_acc", 100, 2), _with_interval(m, "test_qwk", 1, 3),
            _with_interval(m, "test_referable_auc", 1, 3),
            f"{100 * m.get(f'test_referable_sensitivity{at}_selected', np.nan):.1f}",
            f"{100 * m.get(f'test_referable_specificity{at}_selected', np.nan):.1f}"]


def _missing(pool: CrossValidation) -> str:
    return ", ".join(str(k) for k in sorted(set(range(pool.folds)) - set(pool.found)))


def ensemble_screening(pool: CrossValidation, target: float, specificity_target: float,
                       rounds: int) -> str:
    """The fold ensemble's screening report (operating points chosen out of fold)."""
    report = screening_report(pool.ensemble, pool.out_of_fold, target, specificity_target,
                              rounds)
    return screening_markdown(report, f"Fold ensemble of {pool.label}: referable DR")


def _file_stem(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def write_pool_files(pool: CrossValidation, folder: Path) -> list[Path]:
    """The ensemble's test predictions and the out-of-fold predictions, as files."""
    stem = _file_stem(pool.label)
    return [atomic_write_text(folder / f"cv_{stem}_ensemble_test.csv",
                              pool.ensemble.to_csv(index=False)),
            atomic_write_text(folder / f"cv_{stem}_out_of_fold.csv",
                              pool.out_of_fold.to_csv(index=False))]
