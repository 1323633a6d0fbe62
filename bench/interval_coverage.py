"""How often retino's intervals hold the truth and its tests reject a true "no difference":
simulated test sets whose truth is known, scored by the report's own functions.

    python bench/interval_coverage.py [--studies 1000] [--rounds 200]

Prints, for each case, the share of studies whose 95 % interval holds the true value (coverage,
target ≥ 0.93) or whose test rejects at 5 % (type I error, target ≤ 0.06), for the method the
report uses beside the one it replaced, and the ratio of their mean interval widths. The cases
are the ones a statistician's review measured (docs/screening.md#how-far-the-intervals-can-be-
trusted): sensitivity 0.97 over 60 referable patients, AUC 0.99 over 30, eyes of one patient
that agree, the mean over 3 seeds whose own accuracy varies, equally good configurations with 3
seeds against 1. Exits 1 when a method the report uses misses its target.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from retino.evaluation.delong import delong_test, mean_auc_test  # noqa: E402
from retino.evaluation.intervals import (  # noqa: E402
    auc_interval,
    effective_cases,
    percentile_interval,
    proportion_interval,
    two_level_interval,
)
from retino.evaluation.metrics import referable_auc  # noqa: E402

COVERAGE_TARGET, TYPE_I_TARGET = 0.93, 0.06
Interval = tuple[float, float]


def bootstrap(statistic: Callable[[np.ndarray], float], clusters: np.ndarray, rounds: int,
              rng: np.random.Generator) -> Interval:
    """The percentile bootstrap over patients that the report used before (the replaced
    method): whole patients drawn with replacement."""
    patients = np.unique(clusters)
    rows = [np.flatnonzero(clusters == p) for p in patients]
    values = [statistic(np.concatenate([rows[i] for i in rng.integers(0, len(rows), len(rows))]))
              for _ in range(rounds)]
    return percentile_interval(values)


def coverage(truth: float, intervals: list[Interval]) -> tuple[float, float]:
    """(share of intervals holding the truth, mean width)."""
    held = [low <= truth <= high for low, high in intervals]
    return float(np.mean(held)), float(np.mean([high - low for low, high in intervals]))


def sensitivity_case(studies: int, rounds: int, rng: np.random.Generator,
                     truth: float = 0.97, patients: int = 60) -> dict[str, tuple]:
    """One referable eye per patient, each found with probability `truth`."""
    wilson, boot = [], []
    for _ in range(studies):
        found = rng.random(patients) < truth
        ids = np.arange(patients)
        wilson.append(proportion_interval(found, ids))
        boot.append(bootstrap(lambda r, f=found: f[r].mean(), ids, rounds, rng))
    return {"Wilson, design effect (report)": coverage(truth, wilson),
            "patient bootstrap (replaced)": coverage(truth, boot)}


def clustered_sensitivity_case(studies: int, rng: np.random.Generator, truth: float = 0.85,
                               patients: int = 60) -> dict[str, tuple]:
    """Two referable eyes per patient, found together: a patient's eyes agree 80 % of the
    time beyond chance."""
    clustered, independent = [], []
    ids = np.repeat(np.arange(patients), 2)
    for _ in range(studies):
        person = rng.random(patients) < truth
        own = rng.random(2 * patients) < truth
        found = np.where(rng.random(2 * patients) < 0.8, np.repeat(person, 2), own)
        clustered.append(proportion_interval(found, ids))
        independent.append(proportion_interval(found))
    return {"Wilson, design effect (report)": coverage(truth, clustered),
            "Wilson, eyes independent (replaced)": coverage(truth, independent)}


def auc_case(studies: int, rounds: int, rng: np.random.Generator, truth: float = 0.99,
             positives: int = 30, negatives: int = 170) -> dict[str, tuple]:
    """Binormal scores whose population AUC is `truth`, one eye per patient."""
    shift = np.sqrt(2) * norm.ppf(truth)
    ours, boot = [], []
    positive = np.r_[np.ones(positives, bool), np.zeros(negatives, bool)]
    ids = np.arange(len(positive))
    for _ in range(studies):
        score = rng.normal(size=len(positive)) + shift * positive
        ours.append(auc_interval(positive, score, ids))
        boot.append(bootstrap(lambda r, s=score: referable_auc(positive[r], s[r]), ids, rounds,
                              rng))
    return {"score form, clustered DeLong (report)": coverage(truth, ours),
            "patient bootstrap (replaced)": coverage(truth, boot)}


def pooled_seeds_case(studies: int, rounds: int, rng: np.random.Generator, truth: float = 0.70,
                      seed_sd: float = 0.054, seeds: int = 3,
                      images: int = 300) -> dict[str, tuple]:
    """A configuration's seeds, each with its own true accuracy (the noise of training, SD 5.4
    points), tested on one set of 150 patients: the interval of the mean over seeds should hold
    the configuration's accuracy."""
    ours, boot = [], []
    patients = np.repeat(np.arange(images // 2), 2)
    for _ in range(studies):
        accuracy = np.clip(rng.normal(truth, seed_sd, seeds), 0, 1)
        right = rng.random((seeds, images)) < accuracy[:, None]
        ours.append(two_level_interval(right.mean(axis=1),
                                       [effective_cases(r, patients) for r in right]))

        def mean_over_drawn_seeds(rows: np.ndarray, r=right) -> float:
            drawn = rng.integers(0, seeds, seeds)  # the replaced bootstrap of patients and seeds
            return float(r[drawn][:, rows].mean())
        boot.append(bootstrap(mean_over_drawn_seeds, patients, rounds, rng))
    return {"two-level, seeds and patients (report)": coverage(truth, ours),
            "bootstrap of patients and seeds (replaced)": coverage(truth, boot)}


def two_eyes(rng: np.random.Generator, patients: int = 100) -> tuple[np.ndarray, ...]:
    """Two eyes per patient; disease and both (equally good) models' errors shared by them."""
    severity = np.repeat(rng.normal(size=patients), 2) + 0.5 * rng.normal(size=2 * patients)

    def model() -> np.ndarray:
        return severity + np.repeat(rng.normal(size=patients), 2) + 0.3 * rng.normal(
            size=2 * patients)
    return severity > 0.8, model(), model(), np.repeat(np.arange(patients), 2)


def clustered_test_case(studies: int, rng: np.random.Generator) -> dict[str, float]:
    rejected = {"DeLong, patients clustered (report)": [], "DeLong, eyes independent "
                "(replaced)": []}
    for _ in range(studies):
        positive, a, b, patients = two_eyes(rng)
        rejected["DeLong, patients clustered (report)"].append(
            delong_test(positive, a, b, patients).p < 0.05)
        rejected["DeLong, eyes independent (replaced)"].append(delong_test(positive, a, b).p
                                                               < 0.05)
    return {name: float(np.mean(values)) for name, values in rejected.items()}


def unequal_seeds_case(studies: int, rng: np.random.Generator) -> dict[str, float]:
    """Equally good configurations, 3 seeds against 1, each seed its own errors."""
    rejected = {"mean of the seeds' AUCs (report)": [], "seed ensemble's AUC (replaced)": []}
    for _ in range(studies):
        truth = rng.normal(size=300)
        positive = truth > 1.0
        runs = [truth + rng.normal(size=300) for _ in range(4)]
        rejected["mean of the seeds' AUCs (report)"].append(
            mean_auc_test(positive, runs[:3], runs[3:]).p < 0.05)
        rejected["seed ensemble's AUC (replaced)"].append(
            delong_test(positive, np.mean(runs[:3], axis=0), runs[3]).p < 0.05)
    return {name: float(np.mean(values)) for name, values in rejected.items()}


def print_coverage(title: str, results: dict[str, tuple]) -> bool:
    print(f"\n{title}")
    (ours, (ours_coverage, ours_width)), *others = results.items()
    for name, (held, width) in results.items():
        print(f"  {name:40s} coverage {held:.3f}  mean width {width:.3f}  "
              f"width ratio to the report's {width / ours_width:.2f}")
    return ours_coverage >= COVERAGE_TARGET


def print_rejections(title: str, results: dict[str, float]) -> bool:
    print(f"\n{title}")
    for name, share in results.items():
        print(f"  {name:40s} rejects {share:.3f} at a nominal 0.05")
    return next(iter(results.values())) <= TYPE_I_TARGET


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=200, help="bootstrap resamples")
    args = parser.parse_args()
    print(f"{args.studies} simulated studies per case; 95 % intervals; tests at 5 %")

    def rng(case: int) -> np.random.Generator:  # each case its own draws, whatever runs before
        return np.random.default_rng([0, case])
    met = [print_coverage("Sensitivity 0.97, 60 referable patients (one eye each)",
                          sensitivity_case(args.studies, args.rounds, rng(1))),
           print_coverage("Sensitivity 0.85 per eye, 60 patients with two eyes that agree",
                          clustered_sensitivity_case(args.studies, rng(2))),
           print_coverage("Referable AUC 0.99, 30 referable and 170 other patients",
                          auc_case(args.studies, args.rounds, rng(3))),
           print_coverage("Referable AUC 0.85, 30 referable and 170 other patients",
                          auc_case(args.studies, args.rounds, rng(4), truth=0.85)),
           print_coverage("Accuracy over 3 seeds whose own accuracy varies by SD 5.4 points",
                          pooled_seeds_case(args.studies, args.rounds, rng(5))),
           print_rejections("Equally good models, 100 patients with two eyes sharing errors",
                            clustered_test_case(args.studies, rng(6))),
           print_rejections("Equally good configurations, 3 seeds against 1",
                            unequal_seeds_case(args.studies, rng(7)))]
    print(f"\n{sum(met)} of {len(met)} cases meet their target (coverage ≥ {COVERAGE_TARGET}, "
          f"type I error ≤ {TYPE_I_TARGET})")
    return 0 if all(met) else 1


if __name__ == "__main__":
    sys.exit(main())
