"""Drift statistics without TensorFlow: bins, PSI and KS, the URGENT band and its warning."""

from __future__ import annotations

import re
from collections import Counter
from datetime import date

import numpy as np
import pytest

from model.content_check import ContentVerdict
from model.drift import (
    MIN_CASES,
    MIN_PSI_CASES,
    Reference,
    batch_bins,
    psi_and_ks,
    report,
    urgent_band,
)
from model.prediction import Label, Prediction, Priority

THRESHOLD, SUSPECT = 0.5, 0.2


def _reference(seed: int = 0) -> Reference:
    rng = np.random.default_rng(seed)
    return Reference(
        model_version="m-1",
        source="validation",
        probabilities=rng.beta(0.5, 0.5, size=800),
        distances=rng.gamma(9.0, 1.0, size=800),
        threshold=THRESHOLD,
        suspect_threshold=SUSPECT,
    )


def _prediction(p: float, distance: float, content: ContentVerdict) -> Prediction:
    priority = (
        Priority.URGENT
        if p >= THRESHOLD
        else Priority.SUSPECT
        if p >= SUSPECT
        else Priority.ROUTINE
    )
    label = Label.PNEUMONIA if p >= THRESHOLD else Label.NORMAL
    return Prediction(p, label, priority, THRESHOLD, "m-1", content, distance)


def _stream(probabilities: np.ndarray, distances: np.ndarray) -> Counter[tuple[str, int]]:
    pairs = [
        (_prediction(float(p), float(d), ContentVerdict.IN_POPULATION), True)
        for p, d in zip(probabilities, distances, strict=True)
    ]
    return batch_bins(pairs)["m-1"]


def test_a_stream_from_the_reference_distribution_raises_nothing() -> None:
    reference, fresh = _reference(0), _reference(1)  # same distribution, other draws
    result = report(
        _stream(fresh.probabilities[:400], fresh.distances[:400]), reference, date.today(), 7
    )
    assert result.cases == 400 and result.warnings == ()
    assert result.score_psi is not None and result.score_psi < 0.1
    assert result.score_ks is not None and result.score_ks < 0.1
    assert result.distance_psi is not None and result.distance_psi < 0.1
    assert result.urgent_band is not None
    assert result.urgent_band[0] <= (result.urgent_share or 0) <= result.urgent_band[1]


def test_a_shifted_stream_moves_the_statistics_and_warns() -> None:
    reference, fresh = _reference(0), _reference(1)
    shifted = np.clip(fresh.probabilities[:400] + 0.3, 0, 1)  # every case looks sicker
    result = report(_stream(shifted, fresh.distances[:400] * 1.5), reference, date.today(), 7)
    assert result.score_psi is not None and result.score_psi > 0.25
    assert result.distance_ks is not None and result.distance_ks > 0.3
    assert any("URGENT share" in w for w in result.warnings)
    assert "re-validate" in result.warnings[0]


def test_a_few_odd_cases_are_not_a_warning() -> None:
    """All URGENT, but too few cases to say anything: no alarm from noise."""
    result = report(
        _stream(np.full(MIN_CASES - 1, 0.99), np.full(MIN_CASES - 1, 8.0)),
        _reference(),
        date.today(),
        1,
    )
    assert result.urgent_share == 1.0 and result.warnings == ()


def test_the_band_narrows_with_the_number_of_cases() -> None:
    low_30, high_30 = urgent_band(0.7, 30)
    low_3000, high_3000 = urgent_band(0.7, 3000)
    assert low_30 < low_3000 < 0.7 < high_3000 < high_30
    assert high_3000 - low_3000 < 0.06


def test_rejected_images_count_in_content_and_distance_only() -> None:
    bins = batch_bins(
        [
            (_prediction(0.9, 60.0, ContentVerdict.NOT_CHEST), False),
            (_prediction(0.1, 9.0, ContentVerdict.OUTSIDE_POPULATION), True),
        ]
    )["m-1"]
    result = report(bins, _reference(), date.today(), 1)
    assert result.cases == 1 and result.not_chest == 1 and result.outside_population == 1
    assert sum(n for (measure, _), n in bins.items() if measure == "score") == 1
    assert sum(n for (measure, _), n in bins.items() if measure == "distance") == 2


def test_an_empty_window_reports_no_statistics() -> None:
    result = report({}, _reference(), date.today(), 7)
    assert result.cases == 0 and result.urgent_share is None and result.score_psi is None
    assert "no scored case" in result.summary()


@pytest.mark.parametrize("live", [np.zeros(10), np.array([0, 0, 5.0])])
def test_psi_needs_data_on_both_sides(live: np.ndarray) -> None:
    reference = np.zeros(len(live))
    assert psi_and_ks(live, reference) is None


def test_an_infinite_distance_lands_in_the_last_bin() -> None:
    bins = batch_bins([(_prediction(0.1, float("inf"), ContentVerdict.NOT_CHEST), False)])
    assert [key for key in bins["m-1"] if key[0] == "distance"] == [("distance", 199)]


@pytest.mark.parametrize(
    ("cases", "urgent", "shift"),
    [
        (6, "collecting: 6 of 30 cases", "PSI/KS collecting (6 of 100 cases)"),
        (45, "expected ", "PSI/KS collecting (45 of 100 cases)"),
        (150, "expected ", "score PSI "),
    ],
)
def test_figures_below_their_minimum_count_are_shown_as_collecting(
    cases: int, urgent: str, shift: str
) -> None:
    """After 6 cases ``status`` said ``score PSI 1.70, distance PSI 5.53`` (noise: PSI over
    10 groups floors near 9 / n) with no word that it means nothing yet (issue 21)."""
    fresh = _reference(1)
    result = report(
        _stream(fresh.probabilities[:cases], fresh.distances[:cases]), _reference(), date.today(), 7
    )
    line = result.summary()
    assert f"{cases} cases vs validation" in line
    assert f"URGENT {result.urgent_share:.0%} ({urgent}" in line
    assert shift in line
    if cases < MIN_PSI_CASES:
        assert not re.search(r"(PSI|KS) \d", line)  # no figure yet
