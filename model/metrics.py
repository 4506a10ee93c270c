"""Classification metrics at an operating threshold, with bootstrap confidence intervals.

scikit-learn computes every metric; this module only fixes which ones a radiology
department asks for and adds the 95 % intervals that small validation sets need.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    roc_auc_score,
)

HEADLINE = ("accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "roc_auc", "pr_auc")


def classification_metrics(
    labels: np.ndarray,
    probabilities: np.ndarray,
    threshold: float,
    bootstrap: int = 1000,
    seed: int = 0,
    ece_bins: int = 10,
) -> dict[str, Any]:
    """Metrics of ``probability >= threshold`` against ``labels`` (1 = pneumonia).

    Returns plain JSON-able values: ``n``, the headline metrics, ``brier``, ``ece``,
    ``threshold``, ``confusion`` (tp, fp, tn, fn) and ``ci95`` with a percentile bootstrap
    interval (resampling images) for each headline metric.
    """
    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, dtype=float)
    if labels.shape != probabilities.shape or labels.ndim != 1:
        raise ValueError("labels and probabilities must be 1-D arrays of the same length")
    result: dict[str, Any] = {"n": int(labels.size), **_point(labels, probabilities, threshold)}
    result["brier"] = float(brier_score_loss(labels, probabilities))
    result["ece"] = expected_calibration_error(labels, probabilities, ece_bins)
    result["threshold"] = float(threshold)
    predicted = (probabilities >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
    result["confusion"] = {"tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn)}
    if bootstrap:
        result["ci95"] = _bootstrap_intervals(labels, probabilities, threshold, bootstrap, seed)
    return result


def expected_calibration_error(
    labels: np.ndarray, probabilities: np.ndarray, bins: int = 10
) -> float:
    """Mean |observed frequency - mean probability| over equal-width bins, weighted by count."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probabilities, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            error += in_bin.mean() * abs(labels[in_bin].mean() - probabilities[in_bin].mean())
    return float(error)


def _point(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict[str, float]:
    predicted = probabilities >= threshold
    positive = labels == 1
    tp = float(np.sum(predicted & positive))
    fp = float(np.sum(predicted & ~positive))
    fn = float(np.sum(~predicted & positive))
    tn = float(np.sum(~predicted & ~positive))
    both_classes = positive.any() and (~positive).any()
    return {
        "accuracy": (tp + tn) / labels.size,
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "roc_auc": float(roc_auc_score(labels, probabilities)) if both_classes else float("nan"),
        "pr_auc": (
            float(average_precision_score(labels, probabilities)) if both_classes else float("nan")
        ),
    }


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


def _bootstrap_intervals(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float, rounds: int, seed: int
) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {name: [] for name in HEADLINE}
    for _ in range(rounds):
        idx = rng.integers(0, labels.size, labels.size)
        for name, value in _point(labels[idx], probabilities[idx], threshold).items():
            samples[name].append(value)
    return {
        name: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))]
        for name, v in samples.items()
    }
