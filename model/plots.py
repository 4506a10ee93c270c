"""Figures people would rather look at than read: curves, ROC/PR, confusion, calibration."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a display (servers, CI)

import matplotlib.pyplot as plt
import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve, roc_curve


def plot_training_curves(history: Mapping[str, Sequence[float]], path: Path) -> None:
    """Loss, accuracy and ROC AUC per epoch, training against validation."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, key, title in zip(
        axes, ("loss", "accuracy", "auc"), ("loss", "accuracy (logit >= 0)", "ROC AUC"), strict=True
    ):
        epochs = np.arange(1, len(history[key]) + 1)
        ax.plot(epochs, history[key], label="train (augmented)")
        ax.plot(epochs, history[f"val_{key}"], label="validation")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    best = int(np.argmax(history["val_auc"])) + 1
    axes[2].axvline(best, color="grey", linestyle="--", label=f"best epoch {best}")
    axes[2].legend(loc="lower right")
    _save(fig, path)


def plot_roc(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float, auc: float, path: Path
) -> None:
    fpr, tpr, _ = roc_curve(labels, probabilities)
    predicted = probabilities >= threshold
    sens = predicted[labels == 1].mean()
    spec = 1 - predicted[labels == 0].mean()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr, label=f"ROC (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.scatter(
        [1 - spec],
        [sens],
        color="red",
        zorder=3,
        label=f"threshold {threshold:.3f}: sens {sens:.3f}, spec {spec:.3f}",
    )
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC curve")
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, path)


def plot_pr(labels: np.ndarray, probabilities: np.ndarray, pr_auc: float, path: Path) -> None:
    precision, recall, _ = precision_recall_curve(labels, probabilities)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(recall, precision, label=f"PR (average precision {pr_auc:.3f})")
    ax.axhline(labels.mean(), color="grey", linestyle=":", label="prevalence")
    ax.set(
        xlabel="recall (sensitivity)",
        ylabel="precision (PPV)",
        title="Precision-recall curve",
        ylim=(0, 1.02),
    )
    ax.legend(loc="lower left", fontsize=8)
    _save(fig, path)


def plot_confusion(confusion: Mapping[str, int], path: Path) -> None:
    matrix = np.array([[confusion["tn"], confusion["fp"]], [confusion["fn"], confusion["tp"]]])
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(
            j,
            i,
            str(value),
            ha="center",
            va="center",
            fontsize=14,
            color="white" if value > matrix.max() / 2 else "black",
        )
    ax.set_xticks([0, 1], ["normal", "pneumonia"])
    ax.set_yticks([0, 1], ["normal", "pneumonia"])
    ax.set(xlabel="predicted", ylabel="true label", title="Confusion at the threshold")
    _save(fig, path)


def plot_calibration(labels: np.ndarray, probabilities: np.ndarray, ece: float, path: Path) -> None:
    observed, predicted = calibration_curve(labels, probabilities, n_bins=10, strategy="uniform")
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    ax.plot(predicted, observed, marker="o", label=f"model (ECE {ece:.3f})")
    ax.set(
        xlabel="predicted probability",
        ylabel="observed frequency of pneumonia",
        title="Calibration (reliability) curve",
    )
    ax.legend(loc="upper left", fontsize=8)
    _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
