"""Training-time augmentation: the plausible variation between radiographs, nothing more.

Small rotations, shifts and zooms (patient positioning), and gamma/contrast/brightness/noise
changes (exposure, detector and the site's display processing). No flips: a mirrored
chest puts the heart on the wrong side, which never happens at the modality. Strong
intensity augmentation is the main guard against the known domain shift between the
training normals and other sites' normals.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import layers


def build_augmenter(seed: int) -> keras.Sequential:
    """A Keras pipeline applied to batches ``(B, S, S, 1)`` in [0, 1] during training only."""
    return keras.Sequential(
        [
            layers.RandomRotation(8 / 360, fill_mode="constant", seed=seed),
            layers.RandomTranslation(0.06, 0.06, fill_mode="constant", seed=seed + 1),
            layers.RandomZoom((-0.12, 0.12), fill_mode="constant", seed=seed + 2),
            IntensityJitter(seed=seed + 3),
        ],
        name="augment",
    )


class IntensityJitter(layers.Layer):
    """Per-image random gamma, contrast, brightness and Gaussian noise, clipped to [0, 1]."""

    def __init__(
        self,
        gamma: tuple[float, float] = (0.7, 1.45),
        contrast: tuple[float, float] = (0.75, 1.25),
        brightness: float = 0.08,
        noise_std: float = 0.02,
        seed: int | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.gamma = gamma
        self.contrast = contrast
        self.brightness = brightness
        self.noise_std = noise_std
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images: tf.Tensor, training: bool = True) -> tf.Tensor:
        if not training:
            return images
        batch = keras.ops.shape(images)[0]
        shape = (batch, 1, 1, 1)

        def uniform(low: float, high: float) -> tf.Tensor:
            return keras.random.uniform(shape, low, high, seed=self.seed_generator)

        log_gamma = uniform(math.log(self.gamma[0]), math.log(self.gamma[1]))
        x = keras.ops.power(keras.ops.clip(images, 1e-6, 1.0), keras.ops.exp(log_gamma))
        mean = keras.ops.mean(x, axis=(1, 2, 3), keepdims=True)
        x = (x - mean) * uniform(*self.contrast) + mean
        x = x + uniform(-self.brightness, self.brightness)
        sigma = uniform(0.0, self.noise_std)
        x = x + sigma * keras.random.normal(keras.ops.shape(x), seed=self.seed_generator)
        return keras.ops.clip(x, 0.0, 1.0)

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return input_shape

    def get_config(self) -> dict[str, object]:
        return {
            **super().get_config(),
            "gamma": self.gamma,
            "contrast": self.contrast,
            "brightness": self.brightness,
            "noise_std": self.noise_std,
        }
