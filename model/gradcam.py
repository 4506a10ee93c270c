"""Grad-CAM (Selvaraju et al. 2017): which regions pushed the pneumonia logit up.

Pure functions from a network and one model input to a heatmap; rendering it over the
radiograph is :mod:`model.overlay`'s job. Build the probe once per network
(:func:`gradcam_probe`) and reuse it: building it costs more than the heatmap itself.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def last_feature_layer(network: keras.Model) -> keras.layers.Layer:
    """The last layer with a spatial (4-D) output: the finest map the logit depends on."""
    for layer in reversed(network.layers):
        if len(layer.output.shape) == 4:
            return layer
    raise ValueError(f"{network.name} has no convolutional feature map")


def gradcam_probe(network: keras.Model) -> keras.Model:
    """A model returning (last feature map, logit) for the same input."""
    return keras.Model(network.inputs, [last_feature_layer(network).output, network.output])


def grad_cam(network_or_probe: keras.Model, model_input: np.ndarray) -> np.ndarray:
    """Heatmap in [0, 1], shape ``model_input.shape[:2]``, for one ``(S, S, 1)`` input.

    The feature map channels are weighted by the spatially averaged gradient of the logit,
    summed, rectified and upsampled to the input size. An input whose logit has no
    positive evidence anywhere gives an all-zero map. Pass a :func:`gradcam_probe` to
    avoid rebuilding it on every call.
    """
    if model_input.ndim != 3:
        raise ValueError(f"expected one (S, S, 1) model input, got shape {model_input.shape}")
    probe = network_or_probe
    if len(probe.outputs) != 2:
        probe = gradcam_probe(network_or_probe)
    batch = tf.convert_to_tensor(model_input[np.newaxis], dtype=tf.float32)
    with tf.GradientTape() as tape:
        features, logit = probe(batch, training=False)
        score = logit[:, 0]
    gradients = tape.gradient(score, features)
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))[0]
    cam = tf.image.resize(cam[..., tf.newaxis], model_input.shape[:2], method="bilinear")
    heatmap = cam.numpy()[..., 0]
    peak = float(heatmap.max())
    return (heatmap / peak if peak > 0 else heatmap).astype(np.float32)
