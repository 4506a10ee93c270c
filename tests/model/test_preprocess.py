"""The one preprocessing function: shape, dtype, range, aspect handling, quantisation."""

from __future__ import annotations

import numpy as np
import pytest

from model.preprocess import preprocess, resize_square, to_model_levels


def test_output_is_square_float32_in_unit_range_with_one_channel() -> None:
    grey = np.random.default_rng(0).uniform(0, 255, (300, 420)).astype(np.float32)
    x = preprocess(grey, 192)
    assert x.shape == (192, 192, 1)
    assert x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0


def test_aspect_is_squashed_not_padded_or_cropped() -> None:
    # Left half dark, right half bright on a wide image: squashing keeps the split at the
    # centre column; padding would add rows of fill, cropping would lose the left half.
    grey = np.zeros((100, 400), dtype=np.float32)
    grey[:, 200:] = 255.0
    x = preprocess(grey, 64)[..., 0]
    assert np.all(x[:, :30] == 0.0)
    assert np.all(x[:, 34:] == 1.0)
    assert np.all(x[0] == x[-1])  # every row the same: nothing padded top or bottom


def test_contrast_stretch_removes_a_global_brightness_and_contrast_change() -> None:
    grey = np.random.default_rng(1).uniform(0, 200, (256, 256)).astype(np.float32)
    darker_flatter = grey * 0.5 + 20.0
    assert np.abs(preprocess(grey, 96) - preprocess(darker_flatter, 96)).max() <= 1 / 255


def test_result_is_exactly_representable_as_uint8_levels() -> None:
    grey = np.random.default_rng(2).normal(120, 40, (500, 380)).clip(0, 255).astype(np.float32)
    x = preprocess(grey, 128)
    assert np.array_equal(np.rint(x * 255) / 255, x)
    # ... which is what the training cache stores: the same levels as uint8.
    assert np.array_equal(
        to_model_levels(resize_square(grey, 128)), np.rint(x[..., 0] * 255).astype(np.uint8)
    )


def test_constant_image_maps_to_zeros_instead_of_dividing_by_zero() -> None:
    x = preprocess(np.full((50, 60), 77.0, dtype=np.float32), 32)
    assert np.all(x == 0.0)


def test_integer_input_gives_the_same_result_as_float_input() -> None:
    grey = np.random.default_rng(3).integers(0, 256, (222, 333)).astype(np.uint8)
    assert np.array_equal(preprocess(grey, 64), preprocess(grey.astype(np.float32), 64))


@pytest.mark.parametrize("shape", [(10,), (4, 4, 3)])
def test_non_2d_input_is_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="2-D"):
        preprocess(np.zeros(shape, dtype=np.float32), 32)
