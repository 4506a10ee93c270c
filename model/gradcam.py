"""Grad-CAM (Selvaraju et al. 2017): which regions pushed the pneumonia logit up.

Pure functions from a network and model inputs to heatmaps; rendering one over the
radiograph is :mod:`model.overlay`'s job. :func:`gradcam_function` compiles the gradient
computation once per network (eager Grad-CAM costs twenty times the prediction itself);
:func:`grad_cam` is the one-off convenience.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

CamFunction = Callable[[np.ndarray], np.ndarray]


def last_feature_layer(network: keras.Model) -> keras.layers.Layer:
    """The last layer with a spatial (4-D) output: the finest map the logit depends on."""
    for layer in reversed(network.layers):
        if len(layer.output.shape) == 4:
            return layer
    raise ValueError(f"{network.name} has no convolutional feature map")


def gradcam_function(network: keras.Model) -> CamFunction:
    """A compiled ``(N, S, S, 1) inputs -> (N, S, S) heatmaps in [0, 1]`` for ``network``.

    Each channel of the last feature map is weighted by the spatially averaged gradient of
    the logit, the weighted sum is rectified, upsampled to the input size and scaled to a
    peak of 1. An input with no positive evidence anywhere gets an all-zero map. One
    gradient of the summed logits serves the whole batch: in inference mode each logit
    depends on its own image only.
    """
    probe = keras.Model(network.inputs, [last_feature_layer(network).output, network.output])

    @tf.function(reduce_retracing=True)
    def cams(batch: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            features, logits = probe(batch, training=False)
            total = tf.reduce_sum(logits[:, 0])
        gradients = tape.gradient(total, features)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1, keepdims=True))
        cam = tf.image.resize(cam, tf.shape(batch)[1:3], method="bilinear")[..., 0]
        peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
        return tf.math.divide_no_nan(cam, peak)

    def run(model_inputs: np.ndarray) -> np.ndarray:
        if model_inputs.ndim != 4:
            raise ValueError(f"expected (N, S, S, 1) model inputs, got {model_inputs.shape}")
        return cams(tf.convert_to_tensor(model_inputs, dtype=tf.float32)).numpy()

    return run


def grad_cam(network: keras.Model, model_input: np.ndarray) -> np.ndarray:
    """Heatmap in [0, 1], shape ``model_input.shape[:2]``, for one ``(S, S, 1)`` input."""
    if model_input.ndim != 3:
        raise ValueError(f"expected one (S, S, 1) model input, got shape {model_input.shape}")
    return gradcam_function(network)(model_input[np.newaxis])[0]
