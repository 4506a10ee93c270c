"""``classification_metrics`` agrees with scikit-learn on a small fixed set."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from model.metrics import classification_metrics, expected_calibration_error

LABELS = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 1])
PROBS = np.array(
    [0.05, 0.2, 0.35, 0.62, 0.1, 0.9, 0.72, 0.55, 0.4, 0.97, 0.81, 0.66, 0.51, 0.3, 0.15, 0.88]
)
THRESHOLD = 0.5


@pytest.fixture(scope="module")
def metrics() -> dict:
    return classification_metrics(LABELS, PROBS, THRESHOLD, bootstrap=300, seed=7)


def test_threshold_metrics_match_scikit_learn(metrics: dict) -> None:
    predicted = (PROBS >= THRESHOLD).astype(int)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(LABELS, predicted))
    assert metrics["sensitivity"] == pytest.approx(recall_score(LABELS, predicted))
    assert metrics["specificity"] == pytest.approx(recall_score(LABELS, predicted, pos_label=0))
    assert metrics["ppv"] == pytest.approx(precision_score(LABELS, predicted))
    assert metrics["npv"] == pytest.approx(precision_score(LABELS, predicted, pos_label=0))
    assert metrics["f1"] == pytest.approx(f1_score(LABELS, predicted))


def test_ranking_and_probability_metrics_match_scikit_learn(metrics: dict) -> None:
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(LABELS, PROBS))
    assert metrics["pr_auc"] == pytest.approx(average_precision_score(LABELS, PROBS))
    assert metrics["brier"] == pytest.approx(brier_score_loss(LABELS, PROBS))


def test_confusion_counts_add_up(metrics: dict) -> None:
    c = metrics["confusion"]
    assert (c["tp"], c["fp"], c["tn"], c["fn"]) == (7, 2, 5, 2)
    assert metrics["n"] == 16


def test_bootstrap_intervals_bracket_the_point_estimates(metrics: dict) -> None:
    for name in ("accuracy", "sensitivity", "specificity", "roc_auc"):
        low, high = metrics["ci95"][name]
        assert low <= metrics[name] <= high
        assert low < high


def test_ece_is_zero_for_perfectly_calibrated_bins_and_positive_otherwise() -> None:
    labels = np.array([0, 1] * 50)
    assert expected_calibration_error(labels, np.full(100, 0.5)) == pytest.approx(0.0)
    assert expected_calibration_error(labels, np.full(100, 0.9)) == pytest.approx(0.4)
