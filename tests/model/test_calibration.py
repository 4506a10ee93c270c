"""Temperature scaling and thresholds picked from validation scores."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from model.calibration import (
    choose_operating_point,
    fit_temperature,
    threshold_for_sensitivity,
    threshold_for_specificity,
)


def test_temperature_recovers_the_scale_of_overconfident_logits() -> None:
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, 20000)
    labels = (rng.uniform(size=true_logits.size) < expit(true_logits)).astype(float)
    assert fit_temperature(true_logits * 3.0, labels) == pytest.approx(3.0, rel=0.05)


def test_sensitivity_threshold_reaches_the_target_halfway_below_the_last_case_it_needs() -> None:
    probs = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
    labels = np.ones(10)
    t = threshold_for_sensitivity(probs, labels, 0.8)
    assert t == pytest.approx(0.25)  # 0.3 must be caught; 0.2 is the next score below
    assert np.mean(probs >= t) >= 0.8
    assert np.mean(probs >= 0.3 + 1e-9) < 0.8  # no higher threshold that sorts them apart
    assert np.mean(probs * (1 - 1e-6) >= t) >= 0.8  # round-off cannot flip the case at 0.3
    with_negative = threshold_for_sensitivity(np.r_[probs, 0.29], np.r_[labels, 0], 0.8)
    assert with_negative == pytest.approx(0.295)  # the next lower score may be a negative's


def test_specificity_threshold_keeps_the_required_share_of_negatives_below_it() -> None:
    probs = np.linspace(0.0, 0.99, 100)
    labels = np.zeros(100)
    t = threshold_for_specificity(probs, labels, 0.98)
    assert np.mean(probs < t) >= 0.98
    assert t == np.nextafter(probs[97], np.inf)  # the lowest such threshold


def test_operating_point_orders_cut_offs_and_meets_its_targets_on_its_own_data() -> None:
    rng = np.random.default_rng(1)
    labels = np.r_[np.zeros(300), np.ones(700)]
    logits = np.r_[rng.normal(-2, 1.5, 300), rng.normal(2.5, 1.5, 700)]
    point = choose_operating_point(logits, labels, 0.95, 0.99)
    probs = expit(logits / point.temperature)
    assert point.suspect_threshold < point.threshold
    assert np.mean(probs[labels == 1] >= point.threshold) >= 0.95
    assert np.mean(probs[labels == 1] >= point.suspect_threshold) >= 0.99


def test_a_suspect_cut_off_less_sensitive_than_the_label_is_refused() -> None:
    with pytest.raises(ValueError, match="sensitive"):
        choose_operating_point(np.array([-1.0, 1.0]), np.array([0.0, 1.0]), 0.95, 0.9)
