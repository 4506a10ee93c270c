"""Crop consistency: the same chest framed tighter must get the same score.

Random field-of-view crops (:mod:`model.geometry`) take away the label information in the
framing, but not all of it: in the training data the pneumonia films are younger children,
framed tighter, and a normal film trimmed top and bottom still drifts towards pneumonia
(+9 points of normals called pneumonia at w/h 1.5 on the validation split, r3). Augmentation
only asks each view to be classified; this asks two views of one film to *agree*. Every
training view is paired with a tighter top-and-bottom crop of itself (the collimation a
site may use), and the loss adds the squared gap between their logits to the
cross-entropy of both.

The pair rides in one batch: the B first views, then their B partners in the same order,
so the ordinary ``fit`` loop, class weights and metrics apply unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from model.geometry import crop_to_aspect
from model.preprocess import resize_square, to_model_levels

#: How much wider (w/h) the partner crop is than its view: log-uniform in this range.
#: A normal film of w/h 1.22 trimmed to 1.5 is a gain of 1.23, to 1.8 a gain of 1.48.
PARTNER_GAIN = (1.1, 1.6)

#: The validation partner: the crop-invariance check's middle aspect.
VALIDATION_ASPECT = 1.5


def tighter_crop(view: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``view`` trimmed top and bottom to a random wider aspect (its training partner)."""
    height, width = view.shape
    gain = math.exp(rng.uniform(*np.log(PARTNER_GAIN)))
    return crop_to_aspect(view, gain * width / height)


def paired_validation_views(
    squares: np.ndarray,
    originals: Sequence[np.ndarray],
    squashed_copy: Sequence[bool],
    size: int,
) -> np.ndarray:
    """``(N, 2, S, S)`` uint8: each cached validation square with its w/h 1.5 crop.

    A squashed 224 x 224 copy has lost its framing; it is paired with itself (gap 0), as
    the crop-invariance check leaves such images out.
    """
    partners = np.stack(
        [
            square
            if squashed
            else to_model_levels(resize_square(crop_to_aspect(grey, VALIDATION_ASPECT), size))
            for square, grey, squashed in zip(squares, originals, squashed_copy, strict=True)
        ]
    )
    return np.stack([squares, partners], axis=1)


def flatten_pairs(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """A batch of B pairs ``(B, 2, S, S)`` -> 2 B images (views, then partners), labels twice."""
    flat = tf.concat([images[:, 0], images[:, 1]], axis=0)
    return flat, tf.concat([labels, labels], axis=0)[:, tf.newaxis]


class CropConsistencyLoss(keras.losses.Loss):
    """Cross-entropy of every view plus ``weight`` x the squared logit gap of each pair.

    Per-sample values (the pair's gap is charged to both of its images), so Keras's class
    weights and reduction apply as they do to the plain cross-entropy.
    """

    def __init__(self, weight: float, name: str = "crop_consistency", **kwargs: object) -> None:
        super().__init__(name=name, **kwargs)
        self.weight = weight

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        y_true = keras.ops.reshape(keras.ops.cast(y_true, y_pred.dtype), (-1, 1))
        cross_entropy = keras.losses.binary_crossentropy(y_true, y_pred, from_logits=True)
        views, partners = keras.ops.split(keras.ops.reshape(y_pred, (-1,)), 2)
        gap = keras.ops.square(views - partners)
        return cross_entropy + self.weight * keras.ops.concatenate([gap, gap])

    def get_config(self) -> dict[str, object]:
        return {**super().get_config(), "weight": self.weight}
