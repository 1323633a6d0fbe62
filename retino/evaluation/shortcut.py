"""The shortcut floor: what a model scores on a data set without looking at the retina.

A random forest is trained on each photograph's file and camera properties alone
(retino.data.prepare.properties: size, aspect, file size, JPEG quality, brightness, contrast, where
the field of view sits and how large it is) and scored by cross-validation by patient, as the same
kappa and referable AUC, with the same intervals, that runs report. Where a camera or an export
carries a grade, this floor is well above the majority baseline's (kappa 0), and a network's score
on the set holds that much of it without any retinopathy learned; the kappa each property reaches
alone names what carries it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.tree import DecisionTreeClassifier

from retino.core.grades import (
    GRADE_COLUMN,
    GRADES,
    IMAGE_COLUMN,
    PATIENT_COLUMN,
    PREDICTED_COLUMN,
    PROBABILITY_COLUMNS,
    REFERABLE_PROBABILITY_COLUMN,
)
from retino.evaluation.intervals import answers, interval_statistics, run_intervals
from retino.evaluation.metrics import quadratic_weighted_kappa, referable_probability

FOLDS = 5  # cross-validation by patient
TREES = 200
MIN_LEAF = 3  # photographs per leaf: the forest does not memorise single files
ALONE_DEPTH = 4  # splits of the tree that scores one property alone
ROUNDS = 1000  # patient bootstrap rounds of the kappa interval
SHORTCUT_NAME = "a model that never looks at the retina"  # how every report says it


@dataclass(frozen=True)
class ShortcutFloor:
    """The floor's scores (out of fold, on `photographs` photographs of `patients` patients),
    with 95 % intervals, and the kappa each property reaches alone."""

    photographs: int
    patients: int
    folds: int
    scores: dict[str, float]  # acc, qwk, referable_auc and their _ci_low / _ci_high
    # the kappa each property reaches alone (same folds); largest first
    importances: dict[str, float] = field(default_factory=dict)
    majority_acc: float = float("nan")

    def sentence(self) -> str:
        """The line every report prints beside the majority baseline."""
        s = self.scores
        return (f"{SHORTCUT_NAME} (a random forest on {len(self.importances)} file and camera "
                f"properties, {self.folds}-fold cross-validation by patient, "
                f"{self.photographs} photographs of {self.patients} patients) scores kappa "
                f"{s['qwk']:.2f} [{s['qwk_ci_low']:.2f}, {s['qwk_ci_high']:.2f}] and referable "
                f"AUC {s['referable_auc']:.3f} [{s['referable_auc_ci_low']:.3f}, "
                f"{s['referable_auc_ci_high']:.3f}]; the majority baseline scores kappa 0.00 "
                f"at accuracy {self.majority_acc:.3f}")


def shortcut_floor(table: pd.DataFrame, features: list[str], seed: int = 0,
                   folds: int = FOLDS, rounds: int = ROUNDS) -> ShortcutFloor | None:
    """The floor on the surveyed photographs (rows with every feature; columns name, grade,
    patient and the features); None when too few patients or grades are left to cross-validate."""
    usable = table.dropna(subset=features).reset_index(drop=True)
    patients = usable["patient"].astype(str).to_numpy()
    grades = usable["grade"].to_numpy(int)
    folds = min(folds, len(set(patients)), int(np.bincount(grades).max(initial=0)))
    if folds < 2 or len(set(grades)) < 2:
        return None
    probabilities, importances = _out_of_fold(usable[features].to_numpy(float), grades,
                                              patients, folds, seed)
    frame = _predictions(usable, probabilities)
    scores = run_intervals(frame, "", rounds, seed) | _point_scores(frame)
    ranked = dict(sorted(zip(features, importances, strict=True), key=lambda kv: -kv[1]))
    return ShortcutFloor(len(usable), len(set(patients)), folds, scores, ranked,
                         float(pd.Series(grades).value_counts(normalize=True).max()))


def _out_of_fold(x: np.ndarray, grades: np.ndarray, patients: np.ndarray, folds: int,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 5) grade probabilities of each photograph from the forest that did not see its
    patient, and the kappa each feature reaches alone (a small tree on it, the same folds).
    Alone, not the forest's importances: a camera changes several properties at once (size,
    file size, the field's share), and a forest credits any one of them, so its importances
    (impurity or permutation) would name one carrier and hide the others."""
    probabilities = np.zeros((len(grades), len(GRADES)))
    alone = np.zeros((x.shape[1], len(grades)), int)  # each feature's out-of-fold grades
    splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a rare grade in fewer patients than folds: expected
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        parts = list(splitter.split(x, grades, patients))
    for train, held_out in parts:
        forest = RandomForestClassifier(TREES, min_samples_leaf=MIN_LEAF, random_state=seed,
                                        class_weight="balanced", n_jobs=-1)
        forest.fit(x[train], grades[train])
        probabilities[np.ix_(held_out, forest.classes_)] = forest.predict_proba(x[held_out])
        for k in range(x.shape[1]):
            tree = DecisionTreeClassifier(max_depth=ALONE_DEPTH, min_samples_leaf=MIN_LEAF,
                                          class_weight="balanced", random_state=seed)
            tree.fit(x[train][:, [k]], grades[train])
            alone[k, held_out] = tree.predict(x[held_out][:, [k]])
    return probabilities, np.array([quadratic_weighted_kappa(grades, answer)
                                    for answer in alone])


def _predictions(usable: pd.DataFrame, probabilities: np.ndarray) -> pd.DataFrame:
    """The out-of-fold answers as a predictions frame (the columns intervals read)."""
    frame = pd.DataFrame(probabilities, columns=PROBABILITY_COLUMNS)
    frame.insert(0, PATIENT_COLUMN, usable["patient"].astype(str).to_numpy())
    frame.insert(0, IMAGE_COLUMN, usable["name"].astype(str).to_numpy())
    frame.insert(0, GRADE_COLUMN, usable["grade"].to_numpy(int))
    frame[PREDICTED_COLUMN] = probabilities.argmax(axis=1)
    frame[REFERABLE_PROBABILITY_COLUMN] = referable_probability(probabilities)
    return frame


def _point_scores(frame: pd.DataFrame) -> dict[str, float]:
    """Accuracy, kappa and referable AUC on every out-of-fold answer."""
    return interval_statistics(answers(frame), np.arange(len(frame)))
