"""The content check's statistics, without TensorFlow: fit, cut-offs, verdicts, storage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.content_check import (
    CONTENT_CHECK_FILE,
    ContentCheck,
    ContentVerdict,
    fit_content_check,
)


def _features(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(0).normal(size=(16, 16))  # correlated features
    return rng.normal(size=(n, 16)) @ mixing + shift


@pytest.fixture(scope="module")
def check() -> ContentCheck:
    return fit_content_check("m-1", _features(2000, 1), _features(500, 2), 0.985, 0.995)


def test_the_cut_offs_are_the_validation_quantiles(check: ContentCheck) -> None:
    distances = check.reference_distances
    assert len(distances) == 500
    assert np.mean(distances > check.reject_threshold) <= 0.005
    assert np.mean(distances > check.population_threshold) <= 0.015
    assert check.population_threshold < check.reject_threshold


def test_unseen_images_of_the_population_pass_and_a_shifted_cloud_is_rejected(
    check: ContentCheck,
) -> None:
    same = [check.verdict(d) for d in check.distances(_features(1000, 3))]
    assert same.count(ContentVerdict.NOT_CHEST) <= 15  # ~0.5 % expected
    shifted = [check.verdict(d) for d in check.distances(_features(100, 4, shift=5.0))]
    assert shifted == [ContentVerdict.NOT_CHEST] * 100


def test_the_distance_is_mahalanobis_not_euclidean(check: ContentCheck) -> None:
    """Whitening: a step along a low-variance direction counts more than one along a wide one."""
    covariance = np.linalg.inv(check.whitening @ check.whitening.T)
    values, vectors = np.linalg.eigh(covariance)
    narrow, wide = vectors[:, 0], vectors[:, -1]
    far = check.distances(np.stack([check.mean + narrow, check.mean + wide]))
    assert far[0] > 3 * far[1]
    assert far[0] == pytest.approx(1 / np.sqrt(values[0]), rel=1e-6)


def test_non_finite_features_are_never_in_the_population(check: ContentCheck) -> None:
    bad = np.full((2, 16), np.nan)
    bad[1] = np.inf
    distances = check.distances(bad)
    assert [check.verdict(d) for d in distances] == [ContentVerdict.NOT_CHEST] * 2
    assert check.verdict(float("nan")) is ContentVerdict.NOT_CHEST


def test_the_check_round_trips_beside_the_weights(check: ContentCheck, tmp_path: Path) -> None:
    check.save(tmp_path)
    loaded = ContentCheck.load(tmp_path, "m-1")
    assert loaded is not None
    np.testing.assert_array_equal(loaded.whitening, check.whitening)
    assert (loaded.population_threshold, loaded.reject_threshold) == (
        check.population_threshold,
        check.reject_threshold,
    )
    assert loaded.layers == check.layers


def test_a_check_fitted_for_another_model_is_refused(check: ContentCheck, tmp_path: Path) -> None:
    check.save(tmp_path)
    with pytest.raises(ValueError, match="fitted for 'm-1'"):
        ContentCheck.load(tmp_path, "m-2")


def test_a_model_without_a_check_loads_none(tmp_path: Path) -> None:
    assert not (tmp_path / CONTENT_CHECK_FILE).exists()
    assert ContentCheck.load(tmp_path, "m-1") is None


def test_a_corrupt_check_file_is_an_error_not_a_silent_pass(tmp_path: Path) -> None:
    (tmp_path / CONTENT_CHECK_FILE).write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises((ValueError, OSError)):
        ContentCheck.load(tmp_path, "m-1")


@pytest.mark.parametrize(("population", "reject"), [(0.999, 0.99), (0.4, 0.99), (0.99, 1.01)])
def test_inconsistent_quantiles_are_refused(population: float, reject: float) -> None:
    with pytest.raises(ValueError, match="quantile"):
        fit_content_check("m", _features(200, 1), _features(50, 2), population, reject)


def test_too_few_training_images_are_refused() -> None:
    with pytest.raises(ValueError, match="too few"):
        fit_content_check("m", _features(3, 1), _features(50, 2), 0.98, 0.99)


def test_a_check_fitted_on_other_weights_is_refused(tmp_path: Path) -> None:
    """Same version string, retrained weights: the statistics no longer fit the features."""
    fitted = fit_content_check(
        "m-1", _features(300, 1), _features(100, 2), 0.98, 0.99, weights_sha256="a" * 64
    )
    fitted.save(tmp_path)
    assert ContentCheck.load(tmp_path, "m-1", "a" * 64) is not None
    with pytest.raises(ValueError, match="other weights"):
        ContentCheck.load(tmp_path, "m-1", "b" * 64)
