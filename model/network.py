"""The CNN: a small residual separable-convolution network sized for CPU training.

A strided stem and depthwise-separable residual stages keep the multiply-adds low enough
to train the whole dataset on two CPU cores in about an hour; batch norm and dropout carry
the regularisation that a from-scratch model on 5,000 images needs. The network returns a
**logit**: calibration (Platt scaling: temperature and bias) and the decision threshold are
applied outside it, from the model card, so they can be re-fitted without retraining.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

#: The shipped architecture: stem width, then one residual stage per further width.
DEFAULT_WIDTHS = (24, 48, 96, 160, 256)


def build_model(
    input_size: int,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    dropout: float = 0.3,
    weight_decay: float = 1e-4,
) -> keras.Model:
    """Build the classifier: ``(input_size, input_size, 1)`` in [0, 1] -> one logit.

    ``widths[0]`` is the stem's channel count; each further width is one residual stage
    that halves the resolution, so the last feature map is ``input_size / 2**len(widths)``.
    """
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None
    inputs = keras.Input(shape=(input_size, input_size, 1), name="image")
    # Centre the [0, 1] input roughly (grey levels after the percentile stretch).
    x = layers.Rescaling(scale=4.0, offset=-2.0, name="centre")(inputs)
    x = layers.Conv2D(
        widths[0],
        5,
        strides=2,
        padding="same",
        use_bias=False,
        kernel_regularizer=regularizer,
        name="stem_conv",
    )(x)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for stage, width in enumerate(widths[1:], start=1):
        x = _residual_stage(x, width, f"stage{stage}", regularizer)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    logit = layers.Dense(1, name="logit")(x)
    return keras.Model(inputs, logit, name="cxr_pneumonia_cnn")


def _residual_stage(
    x: keras.KerasTensor, width: int, name: str, regularizer: keras.regularizers.Regularizer | None
) -> keras.KerasTensor:
    """Two separable 3x3 convolutions, the first strided by 2, around a projected shortcut."""
    shortcut = layers.Conv2D(
        width,
        1,
        strides=2,
        padding="same",
        use_bias=False,
        kernel_regularizer=regularizer,
        name=f"{name}_proj",
    )(x)
    shortcut = layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    y = layers.SeparableConv2D(
        width,
        3,
        strides=2,
        padding="same",
        use_bias=False,
        pointwise_regularizer=regularizer,
        name=f"{name}_conv1",
    )(x)
    y = layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = layers.SeparableConv2D(
        width,
        3,
        padding="same",
        use_bias=False,
        pointwise_regularizer=regularizer,
        name=f"{name}_conv2",
    )(y)
    y = layers.BatchNormalization(name=f"{name}_bn2")(y)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)
