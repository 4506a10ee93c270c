"""Platt scaling and thresholds picked from validation scores."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from model.calibration import (
    ROUND_OFF_MARGIN,
    Platt,
    choose_operating_point,
    threshold_for_sensitivity,
)


def test_platt_recovers_the_scale_and_shift_of_miscalibrated_logits() -> None:
    """Overconfident logits (3x) whose zero sits 1.5 off the 50 % point: the slope undoes
    the scale (a temperature could do that much) and the offset the shift (it could not)."""
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, 20000)
    labels = (rng.uniform(size=true_logits.size) < expit(true_logits)).astype(float)
    platt = Platt.fit(true_logits * 3.0 + 1.5, labels)
    assert platt.slope == pytest.approx(1 / 3, rel=0.05)
    assert platt.offset == pytest.approx(-0.5, abs=0.05)


def test_the_platt_slope_stays_positive_on_reversed_labels() -> None:
    """The calibration may not reverse the network's ranking, whatever the labels say."""
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 2, 2000)
    labels = (rng.uniform(size=logits.size) < expit(-logits)).astype(float)
    assert Platt.fit(logits, labels).slope > 0


def test_sensitivity_threshold_is_the_highest_reaching_the_target_less_a_round_off_margin() -> None:
    probs = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
    labels = np.ones(10)
    t = threshold_for_sensitivity(probs, labels, 0.8)
    assert t == pytest.approx(0.3 - ROUND_OFF_MARGIN, abs=1e-12)
    assert np.mean(probs >= t) >= 0.8
    assert np.mean(probs >= 0.3 + 1e-9) < 0.8  # any higher threshold misses the target
    assert np.mean(probs - 1e-7 >= t) >= 0.8  # round-off cannot flip the case at 0.3
    # a next lower score closer than the margin: halfway to it, so it stays below
    close = threshold_for_sensitivity(np.r_[probs, 0.3 - 1e-7], np.r_[labels, 0], 0.8)
    assert close == pytest.approx(0.3 - 0.5e-7, abs=1e-12)


def test_operating_point_orders_cut_offs_and_meets_its_targets_on_its_own_data() -> None:
    rng = np.random.default_rng(1)
    labels = np.r_[np.zeros(300), np.ones(700)]
    logits = np.r_[rng.normal(-2, 1.5, 300), rng.normal(2.5, 1.5, 700)]
    point = choose_operating_point(logits, labels, 0.95, 0.99)
    probs = point.probabilities(logits)  # slope and offset (Platt), as the Classifier applies
    assert point.suspect_threshold < point.threshold
    assert np.mean(probs[labels == 1] >= point.threshold) >= 0.95
    assert np.mean(probs[labels == 1] >= point.suspect_threshold) >= 0.99


def test_a_suspect_cut_off_less_sensitive_than_the_label_is_refused() -> None:
    with pytest.raises(ValueError, match="sensitive"):
        choose_operating_point(np.array([-1.0, 1.0]), np.array([0.0, 1.0]), 0.95, 0.9)
