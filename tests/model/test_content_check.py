"""The content check's statistics, without TensorFlow: fit, cut-offs, verdicts, storage, and
the site calibration of its cut-offs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.content_check import (
    CONTENT_CHECK_FILE,
    NONCHEST_MARGIN,
    ContentCheck,
    ContentVerdict,
    conformal_cut_off,
    fit_content_check,
    site_cut_offs,
)


def _features(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(0).normal(size=(16, 16))  # correlated features
    return rng.normal(size=(n, 16)) @ mixing + shift


def _nonchest(n: int = 20, seed: int = 9) -> np.ndarray:
    return _features(n, seed, shift=4.0)


@pytest.fixture(scope="module")
def check() -> ContentCheck:
    return fit_content_check("m-1", _features(2000, 1), _features(500, 2), _nonchest(), 0.985)


def test_the_reject_cut_off_sits_halfway_between_the_children_and_the_non_chest_set(
    check: ContentCheck,
) -> None:
    distances, nonchest = check.reference_distances, check.nonchest_distances
    assert len(distances) == 500 and len(nonchest) == 20
    farthest, nearest = distances.max(), nonchest.min()
    assert check.reject_threshold == pytest.approx(np.sqrt(farthest * nearest))
    assert farthest < check.reject_threshold < nearest  # no child refused, every other image
    assert check.ceiling == pytest.approx(nearest / NONCHEST_MARGIN)
    assert check.reject_threshold <= check.ceiling < nearest


def test_the_flag_cut_off_is_the_validation_quantile(check: ContentCheck) -> None:
    distances = check.reference_distances
    assert np.mean(distances > check.population_threshold) <= 0.015
    assert check.population_threshold < check.reject_threshold


def test_features_that_do_not_separate_the_sets_write_no_check() -> None:
    """A non-chest set inside the children's cloud leaves no safe cut-off: refuse to fit."""
    with pytest.raises(ValueError, match="no safe cut-off"):
        fit_content_check("m", _features(2000, 1), _features(500, 2), _features(20, 9), 0.985)


def test_too_few_non_chest_images_are_refused() -> None:
    with pytest.raises(ValueError, match="non-chest reference images are too few"):
        fit_content_check("m", _features(300, 1), _features(100, 2), _nonchest(5), 0.985)


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
    assert (loaded.population_threshold, loaded.reject_threshold, loaded.ceiling) == (
        check.population_threshold,
        check.reject_threshold,
        check.ceiling,
    )
    assert loaded.layers == check.layers
    np.testing.assert_array_equal(loaded.nonchest_distances, check.nonchest_distances)


def test_a_check_saved_before_the_ceiling_existed_may_not_be_raised(
    check: ContentCheck, tmp_path: Path
) -> None:
    """Older files lack the ceiling: a site calibration then keeps their cut-off."""
    path = check.save(tmp_path)
    with np.load(path) as data:
        kept = {k: data[k] for k in data.files if k not in ("ceiling", "nonchest_distances")}
    np.savez(path, **kept)
    loaded = ContentCheck.load(tmp_path, "m-1")
    assert loaded is not None and loaded.ceiling == 0.0
    assert loaded.highest_reject_threshold == loaded.reject_threshold
    far_site = np.full(50, loaded.reject_threshold * 1.05)
    assert site_cut_offs(loaded, far_site).check.reject_threshold == loaded.reject_threshold


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


@pytest.mark.parametrize("population", [0.4, 1.0, 1.01])
def test_an_impossible_flag_quantile_is_refused(population: float) -> None:
    with pytest.raises(ValueError, match="quantile"):
        fit_content_check("m", _features(200, 1), _features(50, 2), _nonchest(), population)


def test_too_few_training_images_are_refused() -> None:
    with pytest.raises(ValueError, match="too few"):
        fit_content_check("m", _features(3, 1), _features(50, 2), _nonchest(), 0.98)


def test_a_reject_cut_off_above_the_ceiling_cannot_be_built(check: ContentCheck) -> None:
    with pytest.raises(ValueError, match="ceiling"):
        ContentCheck(
            model_version="m",
            layers=check.layers,
            mean=check.mean,
            whitening=check.whitening,
            population_threshold=1.0,
            reject_threshold=check.ceiling + 1,
            reference_distances=check.reference_distances,
            ceiling=check.ceiling,
        )


def test_a_check_fitted_on_other_weights_is_refused(tmp_path: Path) -> None:
    """Same version string, retrained weights: the statistics no longer fit the features."""
    fitted = fit_content_check(
        "m-1", _features(300, 1), _features(100, 2), _nonchest(), 0.98, weights_sha256="a" * 64
    )
    fitted.save(tmp_path)
    assert ContentCheck.load(tmp_path, "m-1", "a" * 64) is not None
    with pytest.raises(ValueError, match="other weights"):
        ContentCheck.load(tmp_path, "m-1", "b" * 64)


# -- the site calibration of the cut-offs


@pytest.mark.parametrize(
    ("n", "alpha", "k"), [(125, 0.005, None), (199, 0.005, 199), (99, 0.05, 95)]
)
def test_the_conformal_cut_off_is_the_k_th_smallest(n: int, alpha: float, k: int | None) -> None:
    distances = np.arange(1, n + 1, dtype=float)[::-1]  # unsorted on purpose
    cut, shown = conformal_cut_off(distances, alpha)
    if k is None:  # ceil(0.995 * 126) = 126 > 125: not demonstrable on this sample
        assert (cut, shown) == (float(n), False)
    else:
        assert (cut, shown) == (float(k), True)


def test_a_site_whose_films_sit_farther_out_gets_higher_cut_offs_within_the_ceiling(
    check: ContentCheck,
) -> None:
    rng = np.random.default_rng(5)
    # the site's films straddle the shipped cut-off: several would be refused
    site = check.reject_threshold * rng.uniform(0.7, 1.05, size=250)
    refitted = site_cut_offs(check, site)
    new = refitted.check
    assert new.reject_threshold > check.reject_threshold
    assert new.reject_threshold <= check.ceiling
    assert (site > new.reject_threshold).sum() <= 0.005 * len(site) + 1
    assert refitted.record["refused_before"] > refitted.record["refused_after_in_sample"]
    assert refitted.record["guarantee_demonstrated"] == {"reject": True, "flag": True}
    assert new.population_threshold <= new.reject_threshold
    # the statistics are the shipped ones: only the cut-offs move
    np.testing.assert_array_equal(new.whitening, check.whitening)
    assert new.ceiling == check.ceiling


def test_a_site_never_lowers_the_cut_offs(check: ContentCheck) -> None:
    near = np.full(150, check.population_threshold * 0.5)
    new = site_cut_offs(check, near).check
    assert new.reject_threshold == check.reject_threshold
    assert new.population_threshold == check.population_threshold


def test_a_site_past_the_ceiling_keeps_the_ceiling_and_says_so(check: ContentCheck) -> None:
    """Every non-chest reference image stays refused, whatever the site's films need."""
    far = np.full(150, check.ceiling * 1.2)
    refitted = site_cut_offs(check, far)
    assert refitted.check.reject_threshold == check.ceiling
    assert refitted.record["at_ceiling"] is True
    assert refitted.record["refused_after_in_sample"] == 150
    verdicts = {refitted.check.verdict(d) for d in check.nonchest_distances}
    assert verdicts == {ContentVerdict.NOT_CHEST}


def test_leave_one_out_counts_the_film_that_set_the_cut_off(check: ContentCheck) -> None:
    """In sample, the farthest film of a small sample is never refused (it set the cut-off);
    judged by a cut-off refitted without it, it is: the honest figure."""
    site = np.concatenate([np.full(124, check.population_threshold), [check.ceiling * 0.99]])
    record = site_cut_offs(check, site).record
    assert record["refused_after_in_sample"] == 0
    assert record["refused_after_leave_one_out"] == 1


def test_too_small_a_site_sample_is_refused(check: ContentCheck) -> None:
    with pytest.raises(ValueError, match="too few"):
        site_cut_offs(check, np.ones(10))
