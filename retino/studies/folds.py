"""Cross-validation in a study's report: each configuration's folds pooled into what a reader
chooses by and what a clinic would get.

- The validation metric over folds, as mean ± std: the choice of a configuration then rests on
  every training image, not on one validation split of a few hundred.
- Out-of-fold metrics: every training image scored once, by the fold model that did not train
  on it (the mean of those models where a configuration ran several seeds).
- The fold ensemble on the test set: the mean answers of the K fold models, with the headline
  metrics, intervals and screening report of a single run. Its operating points (and a
  regression head's cut points) are chosen on the out-of-fold predictions, never on the test
  set's labels: they are the ensemble's validation predictions, carried to the ensemble's
  scale first (a mean of K models is less spread than one; on_ensemble_scale).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from retino.core.files import atomic_write_text
from retino.core.metric_names import (
    ALL_PHOTOGRAPHS,
    TEST_ACC,
    TEST_QWK,
    TEST_REFERABLE_AUC,
    VAL_QWK,
    screening_key,
    selected,
)
from retino.core.names import FINISHED
from retino.evaluation.intervals import same_images, seed_interval
from retino.evaluation.predictions import (
    ensemble_frame,
    frame_metrics,
    headline_metrics,
    on_ensemble_scale,
    out_of_fold_frame,
    with_cut_points,
)
from retino.evaluation.screening import screening_markdown, screening_report
from retino.studies.comparison import Configuration, configurations, run_labels
from retino.tracking.records import RunRecord

log = logging.getLogger(__name__)

CROSS_VALIDATION_COLUMNS = [
    "configuration", "folds", "selection metric over folds (mean ± std)",
    "out-of-fold images", "out-of-fold acc %", "out-of-fold QWK",
    f"out-of-fold referable AUC, {ALL_PHOTOGRAPHS}",
    "single fold models: test acc % (mean ± std)",
    "fold ensemble: test acc % [95 %]", "fold ensemble: test QWK [95 %]",
    f"fold ensemble: referable AUC, {ALL_PHOTOGRAPHS} [95 %]",
    f"fold ensemble: referable sensitivity % at operating point, {ALL_PHOTOGRAPHS}",
    f"fold ensemble: referable specificity % at operating point, {ALL_PHOTOGRAPHS}"]

CROSS_VALIDATION_LEGEND = """\
Each cross-validated configuration pools its folds: the selection metric of each fold's run on
its own validation fold (mean ± std over folds); the out-of-fold metrics, every training image
scored once by the fold model that did not train on it; and the fold ensemble, the mean answers
of the fold models on the test set, with 95 % intervals that count a patient's eyes together,
at the operating point chosen on the out-of-fold predictions carried to the ensemble's scale
(its validation set; never the test set's labels). The single models' test accuracy shows what
the ensemble adds.
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
    choosing: pd.DataFrame  # simulated out-of-fold ensembles: its operating points' choice

    @property
    def complete(self) -> bool:
        return sorted(set(self.found)) == list(range(self.folds))


def cross_validated(configs: list[Configuration]) -> list[Configuration]:
    """The configurations whose runs were cut into folds (data.folds set), each with a
    validation split and predictions files."""
    return [config for config in configs if cut_into_folds(config.runs[0])
            and all(run.val is not None for run in config.runs)]


def pool_folds(config: Configuration, target: float, rounds: int) -> CrossValidation:
    """The configuration's folds pooled (see the module's docstring)."""
    runs = config.runs
    metric = runs[0].params.get("selection_metric", VAL_QWK)
    scores = [run.final.get(f"{metric}_selected", np.nan) for run in runs]
    tests = same_images([run.test for run in runs])
    out_of_fold = out_of_fold_frame([run.val for run in runs])
    ensemble = ensemble_frame(tests)
    # Chosen on the out-of-fold predictions carried to the ensemble's scale (on_ensemble_scale)
    per_fold = len(runs) / len({run.params.get("data.fold") for run in runs})  # its seeds
    frames, _ = with_cut_points({"val": on_ensemble_scale(out_of_fold, tests, round(per_fold)),
                                 "test": ensemble})
    out_of_fold = with_cut_points({"val": out_of_fold})[0]["val"]
    single = [run.final.get(selected(TEST_ACC), np.nan) for run in runs]
    # The test keys at the points chosen on the ensemble's scale; the val_ keys out of fold
    metrics = {key: value for key, value in headline_metrics(
        frames["test"], frames["val"], target, rounds).items() if not key.startswith("val_")}
    metrics |= {f"{key}_selected": value for key, value in
                frame_metrics(out_of_fold, "val_").items()}
    return CrossValidation(config.label, int(float(config.params["data.folds"])),
                           sorted(int(float(run.params.get("data.fold", 0))) for run in runs),
                           (metric, float(np.nanmean(scores)), float(np.nanstd(scores, ddof=1))
                            if len(scores) > 1 else 0.0),
                           out_of_fold, frames["test"], metrics,
                           (float(np.nanmean(single)), float(seed_interval(single)[1])),
                           frames["val"])


@dataclass
class EnsembleChoice:
    """The cross-validated configuration whose fold ensemble a study registers."""

    pool: CrossValidation
    runs: list[RunRecord]  # its fold runs (every seed of every fold), by fold
    metric: str  # the validation metric that chose it, computed on the out-of-fold predictions
    score: float


def cut_into_folds(run: RunRecord) -> bool:
    return run.params.get("data.folds") not in (None, "", "None")


def out_of_fold_rule(runs: list[RunRecord]) -> tuple[str, bool]:
    """(metric, higher is better): the validation metric the runs selected their epoch with, or
    the validation kappa when they selected by different ones, as comparison.selection_rule
    chooses, but to be computed on the out-of-fold predictions."""
    metrics = {run.params.get("selection_metric", VAL_QWK) for run in runs}
    metric = metrics.pop() if len(metrics) == 1 else VAL_QWK
    return metric, not metric.endswith("loss")


def _fold_order(run: RunRecord) -> tuple[float, str]:
    return float(run.params.get("data.fold", 0)), run.params.get("seed", "")


def best_fold_ensemble(runs: list[RunRecord]) -> EnsembleChoice | None:
    """The cross-validated configuration whose out-of-fold predictions score best by the
    selection metric: one score on every training image, each scored by a model that did not
    train on it, where a mean of per-fold scores weighs each fold's few hundred images alike
    (and a regression head's per-fold cut points flatter each fold). Only configurations with
    every fold finished compete: an incomplete one's out-of-fold predictions miss a fold's
    images, so its score would not compare (a warning names the missing folds). None when no
    run was cut into folds, or, with a warning, when no configuration has all its folds."""
    finished = [run for run in runs if run.status == FINISHED]
    if not any(cut_into_folds(run) for run in finished):
        return None
    metric, higher = out_of_fold_rule(finished)
    configs = configurations(finished, run_labels(finished))
    pooled = cross_validated(configs)
    for config in configs:
        if config.label not in {other.label for other in pooled}:
            log.warning("%s was not cross-validated: it cannot compete with fold ensembles "
                        "by an out-of-fold metric, so it is not registered.", config.label)
    candidates = []
    for config in pooled:
        target = float(config.runs[0].params.get("referable_sensitivity_target", 0.9))
        try:
            pool = pool_folds(config, target, rounds=0)
        except ValueError as err:  # fold models tested on different images
            log.warning("Folds of %s not pooled: %s.", config.label, err)
            continue
        if not pool.complete:
            log.warning("%s is missing fold(s) %s of %d: its fold ensemble is not registered "
                        "(run the study again to finish them: finished folds are skipped).",
                        config.label, _missing(pool), pool.folds)
            continue
        candidates.append(EnsembleChoice(pool, sorted(config.runs, key=_fold_order), metric,
                                         float(pool.metrics.get(f"{metric}_selected", np.nan))))
    if not candidates:
        log.warning("No cross-validated configuration has all its folds: no fold ensemble to "
                    "register.")
        return None
    sign = 1.0 if higher else -1.0
    return max(candidates, key=lambda c: np.nan_to_num(sign * c.score, nan=-np.inf))


def _with_interval(metrics: dict[str, float], key: str, scale: float, digits: int) -> str:
    value = scale * metrics.get(f"{key}_selected", np.nan)
    low = metrics.get(f"{key}_selected_ci_low")
    high = metrics.get(f"{key}_selected_ci_high")
    bounds = "" if low is None or np.isnan(low) else \
        f" [{scale * low:.{digits}f}, {scale * high:.{digits}f}]"
    return f"{value:.{digits}f}{bounds}"


def cross_validation_row(pool: CrossValidation) -> list[str]:
    metric, mean, std = pool.selection
    oof = frame_metrics(pool.out_of_fold, "")  # acc, qwk, referable_auc
    m = pool.metrics
    # at the operating point chosen out of fold; at the predicted grade where none was
    point = "at_target" if screening_key("sensitivity", point="at_target") in m else ""
    folds = f"{len(pool.found)} of {pool.folds}" + ("" if pool.complete else
                                                    f" (missing: {_missing(pool)})")
    rates = [100 * m.get(screening_key(rate, point=point), np.nan)
             for rate in ("sensitivity", "specificity")]
    return [pool.label, folds, f"{metric} {mean:.4f} ± {std:.4f}", str(len(pool.out_of_fold)),
            f"{100 * oof['acc']:.2f}", f"{oof['qwk']:.3f}", f"{oof['referable_auc']:.3f}",
            f"{100 * pool.single_test_acc[0]:.2f} ± {100 * pool.single_test_acc[1]:.2f}",
            _with_interval(m, TEST_ACC, 100, 2), _with_interval(m, TEST_QWK, 1, 3),
            _with_interval(m, TEST_REFERABLE_AUC, 1, 3), *(f"{rate:.1f}" for rate in rates)]


def _missing(pool: CrossValidation) -> str:
    return ", ".join(str(k) for k in sorted(set(range(pool.folds)) - set(pool.found)))


def ensemble_screening(pool: CrossValidation, target: float, specificity_target: float,
                       programme_prevalence: float | None = None) -> str:
    """The fold ensemble's screening report (operating points chosen out of fold)."""
    report = screening_report(pool.ensemble, pool.choosing, target, specificity_target,
                              programme_prevalence=programme_prevalence)
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
