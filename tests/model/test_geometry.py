"""Field-of-view augmentation: the crop's aspect and area must not tell the classes apart."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ks_2samp

from model.geometry import FieldOfView, crop_to_aspect, random_field_of_view


def _aspects(image: np.ndarray, squashed: bool, seed: int, n: int = 3000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    fov = FieldOfView()
    shapes = [random_field_of_view(image, squashed, rng, fov).shape for _ in range(n)]
    return np.array([w / h for h, w in shapes])


def test_crops_of_wide_and_narrow_films_share_one_aspect_distribution() -> None:
    """In the data, pneumonia films are wider (w/h 1.49) than normals (1.22). After the
    augmentation the aspect distributions the network sees must overlap almost entirely;
    without it they would not overlap at all (KS statistic 1.0). What separates them still
    (about 0.2) is the share of uncropped views (``full_view``), which keep their aspect."""
    wide = np.zeros((300, 447), dtype=np.float32)  # w/h 1.49, like the pneumonias
    narrow = np.zeros((300, 366), dtype=np.float32)  # w/h 1.22, like the normals
    square_copy = np.zeros((224, 224), dtype=np.float32)  # a squashed 224 x 224 copy
    a_wide, a_narrow = _aspects(wide, False, 1), _aspects(narrow, False, 2)
    a_copy = _aspects(square_copy, True, 3)
    assert ks_2samp(a_wide, a_narrow).statistic < 0.3
    assert ks_2samp(a_wide, a_copy).statistic < 0.3
    for aspects in (a_wide, a_narrow, a_copy):
        assert np.percentile(aspects, 10) < 1.15 and np.percentile(aspects, 90) > 1.55


def test_crops_stay_inside_the_image_and_keep_enough_of_it() -> None:
    rng = np.random.default_rng(0)
    image = np.arange(300 * 400, dtype=np.float32).reshape(300, 400)
    for _ in range(500):
        view = random_field_of_view(image, False, rng, FieldOfView())
        assert view.shape[0] <= 300 and view.shape[1] <= 400
        assert view.size >= 0.3 * image.size
        # a crop is a contiguous window of the original (no resampling of uncopied films)
        assert view[0, 1] - view[0, 0] == 1


@pytest.mark.parametrize("aspect", [1.3, 1.5, 1.8])
def test_crop_to_aspect_trims_top_and_bottom_only(aspect: float) -> None:
    image = np.arange(400 * 480, dtype=np.float32).reshape(400, 480)  # w/h 1.2
    cropped = crop_to_aspect(image, aspect)
    assert cropped.shape[1] == 480
    assert cropped.shape[1] / cropped.shape[0] == pytest.approx(aspect, rel=0.01)
    top = (400 - cropped.shape[0]) // 2
    assert cropped[0, 0] == image[top, 0]
