"""Figures of a run and of a study: accuracy per epoch, the normalised confusion matrix, the
referable-DR ROC curve (files on disk)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_curve

from retino.core.grades import GRADE_NAMES
from retino.core.metric_names import TEST_ACC, TRAIN_ACC
from retino.evaluation.metrics import (
    net_benefit,
    normalize_by_true_class,
    referable_auc,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _pyplot():
    """matplotlib.pyplot on its file-only backend (no display on servers and in tests),
    imported when a figure is drawn: a run with plots=false, and a command that draws nothing,
    no longer waits half a second for it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _integer_ticks(axis) -> None:  # a matplotlib Axis
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def plot_accuracy(history: list[dict[str, float]], path: Path, title: str = "") -> Path:
    """Train and test accuracy (%) per epoch, as in the lab's comparison figure."""
    epochs = [row["epoch"] for row in history]
    fig, ax = _pyplot().subplots(figsize=(6, 4))
    ax.plot(epochs, [100 * row[TRAIN_ACC] for row in history], "o-", label="train")
    ax.plot(epochs, [100 * row[TEST_ACC] for row in history], "s-", label="test")
    ax.set(xlabel="epoch", ylabel="accuracy (%)", title=title or "Accuracy per epoch")
    _integer_ticks(ax.xaxis)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_confusion_matrix(counts: np.ndarray, path: Path, title: str = "") -> Path:
    """Confusion matrix normalised by true grade (each row sums to 1), with the values printed."""
    normalized = normalize_by_true_class(counts)
    fig, ax = _pyplot().subplots(figsize=(5.5, 4.8))
    image = ax.imshow(normalized, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046)
    for (i, j), value in np.ndenumerate(normalized):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center",
                color="white" if value > 0.5 else "black", fontsize=9)
    ticks = range(len(normalized))
    ax.set_xticks(ticks, GRADE_NAMES[: len(normalized)], rotation=30, ha="right")
    ax.set_yticks(ticks, GRADE_NAMES[: len(normalized)])
    ax.set(xlabel="predicted grade", ylabel="true grade",
           title=title or "Normalized confusion matrix")
    return _save(fig, path)


def plot_referable_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path,
                       title: str = "", thresholds: dict[str, float] | None = None) -> Path:
    """ROC curves of referable DR (grade >= 2 against P(grade >= 2)), one per split or run:
    curves maps a label to (referable truth, score); thresholds (an operating point's name ->
    P(referable) threshold) are marked where they fall on every curve."""
    fig, ax = _pyplot().subplots(figsize=(5, 5))
    for i, (label, (referable, score)) in enumerate(curves.items()):
        auc = referable_auc(referable, score)
        if np.isnan(auc):  # a curve needs both kinds of image
            continue
        fpr, tpr, _ = roc_curve(referable, score)
        ax.plot(fpr, tpr, color=f"C{i}", label=f"{label} (AUC {auc:.3f})")
        for marker, (name, threshold) in zip("os^", (thresholds or {}).items(), strict=False):
            referable, flagged = np.asarray(referable, bool), np.asarray(score) >= threshold
            ax.plot((flagged & ~referable).sum() / (~referable).sum(),
                    (flagged & referable).sum() / referable.sum(), marker, color=f"C{i}",
                    markerfacecolor="none", markersize=9, label=f"{label} at {name}")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity",
           title=title or "Referable DR (grade ≥ 2)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_accuracy_comparison(panels: dict[str, list[tuple[str, list[float], list[float]]]],
                             path: Path, title: str = "") -> Path:
    """The lab's comparison figure: one panel per architecture; per run a colour, train dashed
    and test solid, accuracy (%) per epoch. panels: architecture -> [(label, train, test)]."""
    fig, axes = _pyplot().subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for ax, (architecture, curves) in zip(axes[0], panels.items(), strict=True):
        for i, (label, train, test) in enumerate(curves):
            colour = f"C{i}"
            ax.plot(range(1, len(train) + 1), [100 * v for v in train], "--", color=colour,
                    label=f"{label} train")
            ax.plot(range(1, len(test) + 1), [100 * v for v in test], "-", marker="o",
                    color=colour, label=f"{label} test")
        ax.set(title=architecture, xlabel="epoch", ylabel="accuracy (%)")
        _integer_ticks(ax.xaxis)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_confusion_grid(matrices: list[tuple[str, np.ndarray]], path: Path) -> Path:
    """Every run's confusion matrix normalised by true grade, side by side."""
    cols = min(4, len(matrices))
    rows = -(-len(matrices) // cols)
    fig, axes = _pyplot().subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(matrices):]:
        ax.axis("off")
    for ax, (name, counts) in zip(axes.flat, matrices, strict=False):
        normalized = normalize_by_true_class(counts)
        ax.imshow(normalized, cmap="Blues", vmin=0, vmax=1)
        for (i, j), value in np.ndenumerate(normalized):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if value > 0.5 else "black")
        ax.set(title=name, xlabel="predicted", ylabel="true")
        ax.title.set_fontsize(9)
    return _save(fig, path)


def plot_class_activation_maps(examples: list[tuple[np.ndarray, np.ndarray, int, int]],
                                path: Path) -> Path:
    """Each example: the fundus with its activation map over it, titled true -> predicted."""
    cols = min(5, len(examples))
    rows = -(-len(examples) // cols)
    fig, axes = _pyplot().subplots(rows, cols, figsize=(2.6 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (rgb, heat, grade, predicted) in zip(axes.flat, examples, strict=False):
        ax.imshow(rgb)
        ax.imshow(heat, cmap="jet", alpha=0.4, vmin=0, vmax=1)
        ax.set_title(f"grade {grade} → predicted {predicted}", fontsize=9,
                     color="black" if grade == predicted else "red")
    fig.suptitle("Class activation maps (last conv block × head weights of the prediction)",
                 fontsize=10)
    return _save(fig, path)


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return Path(path)


def plot_decision_curve(referable: np.ndarray, probability: np.ndarray, path: Path,
                        title: str = "") -> Path:
    """Decision curve: the net benefit of referring at P(referable) ≥ each threshold
    probability, beside referring everyone and no one (Vickers & Elkin 2006). The model helps
    at the thresholds where its curve lies above both."""
    referable = np.asarray(referable, bool)
    thresholds = np.linspace(0.01, 0.6, 60)
    prevalence = referable.mean() if len(referable) else np.nan
    fig, ax = _pyplot().subplots(figsize=(5, 4))
    ax.plot(thresholds, net_benefit(referable, probability, thresholds), label="the model")
    ax.plot(thresholds, prevalence - (1 - prevalence) * thresholds / (1 - thresholds), "--",
            color="grey", label="refer everyone")
    ax.axhline(0, color="black", lw=0.8, label="refer no one")
    ax.set(xlabel="threshold probability of referable DR", ylabel="net benefit per person",
           title=title or "Decision curve", ylim=(min(-0.05, -prevalence / 4), prevalence * 1.1
                                                  if prevalence > 0 else 0.1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_calibration(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path,
                     title: str = "", bins: int = 10) -> Path:
    """Reliability diagram of P(referable): per equal-width bin, the observed share of
    referable images against the mean predicted probability (the diagonal is perfect), one
    curve per split or run, and below, how many images fall in each bin."""
    fig, (ax, counts) = _pyplot().subplots(2, 1, figsize=(5, 6), height_ratios=(3, 1), sharex=True)
    edges = np.linspace(0, 1, bins + 1)
    for i, (label, (referable, score)) in enumerate(curves.items()):
        score = np.clip(np.asarray(score, float), 0, 1)
        observed, predicted = calibration_curve(np.asarray(referable, bool), score,
                                                n_bins=bins, strategy="uniform")
        ax.plot(predicted, observed, "o-", color=f"C{i}", label=label)
        counts.hist(score, bins=edges, histtype="step", color=f"C{i}")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    ax.set(ylabel="observed share referable", title=title or "Calibration of P(referable)",
           xlim=(0, 1), ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    counts.set(xlabel="predicted P(referable)", ylabel="images")
    counts.set_yscale("log")
    return _save(fig, path)
