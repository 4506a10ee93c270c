"""Crop consistency: the pair layout and the loss (tests/model/test_training_smoke.py trains
with it through the CLI)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.tf


def test_partner_is_the_same_film_trimmed_top_and_bottom() -> None:
    from model.consistency import PARTNER_GAIN, tighter_crop

    rng = np.random.default_rng(0)
    view = np.arange(300 * 360, dtype=np.float32).reshape(300, 360)
    for _ in range(50):
        partner = tighter_crop(view, rng)
        gain = (partner.shape[1] / partner.shape[0]) / (360 / 300)
        assert PARTNER_GAIN[0] - 0.02 <= gain <= PARTNER_GAIN[1] + 0.02
        top = (300 - partner.shape[0]) // 2
        np.testing.assert_array_equal(partner, view[top : top + partner.shape[0]])


def test_pairs_flatten_to_views_then_partners_with_labels_twice() -> None:
    from model.consistency import flatten_pairs

    pairs = np.stack([np.full((2, 4, 4), i, np.uint8) for i in range(3)])
    pairs[:, 1] += 100  # partners
    images, labels = flatten_pairs(pairs, np.array([0.0, 1.0, 1.0], np.float32))
    assert [int(x[0, 0]) for x in images.numpy()] == [0, 1, 2, 100, 101, 102]
    assert labels.numpy()[:, 0].tolist() == [0.0, 1.0, 1.0, 0.0, 1.0, 1.0]


def test_loss_is_cross_entropy_plus_the_weighted_squared_gap_of_each_pair() -> None:
    import keras

    from model.consistency import CropConsistencyLoss

    y = np.array([[1.0], [0.0], [1.0], [0.0]], np.float32)
    agreeing = np.array([[2.0], [-1.0], [2.0], [-1.0]], np.float32)
    disagreeing = np.array([[2.0], [-1.0], [-1.0], [2.0]], np.float32)
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    loss = CropConsistencyLoss(0.5)
    np.testing.assert_allclose(float(loss(y, agreeing)), float(bce(y, agreeing)), rtol=1e-5)
    # Both pairs disagree by 3 logits: 0.5 * 9 charged to each of the four images.
    np.testing.assert_allclose(
        float(loss(y, disagreeing)), float(bce(y, disagreeing)) + 4.5, rtol=1e-5
    )


def test_validation_pairs_leave_squashed_copies_with_themselves() -> None:
    from model.consistency import paired_validation_views

    squares = np.stack([np.full((16, 16), 7, np.uint8), np.full((16, 16), 9, np.uint8)])
    gradient = np.tile(np.arange(120, dtype=np.float32), (100, 1)).T  # rows vary
    pairs = paired_validation_views(squares, [gradient, gradient], [False, True], 16)
    assert pairs.shape == (2, 2, 16, 16)
    np.testing.assert_array_equal(pairs[:, 0], squares)
    np.testing.assert_array_equal(pairs[1, 1], squares[1])
    assert not np.array_equal(pairs[0, 1], squares[0])  # a real crop of the original
