"""Load a model directory and score display-level grey images.

``Classifier.load()`` reads ``model.keras`` + ``model_card.json`` (the shipped model by
default); ``predict`` applies the one preprocessing function, the network, the card's
temperature and thresholds. The worker builds one Classifier per process, after fork.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from model.card import SHIPPED_DIR, WEIGHTS_FILE, ModelCard
from model.content_check import (
    HISTOGRAM_BINS,
    INPUT_HISTOGRAM,
    INPUT_LAYOUT,
    LAYOUT_BLOCK,
    ContentCheck,
    weights_digest,
)
from model.gradcam import CamFunction, gradcam_function
from model.prediction import Label, Prediction, Priority
from model.preprocess import PREPROCESSING_VERSION, preprocess

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras


class Classifier:
    """A trained network plus its model card; deterministic for a given input."""

    def __init__(
        self, network: keras.Model, card: ModelCard, content_check: ContentCheck | None = None
    ) -> None:
        if card.preprocessing_version != PREPROCESSING_VERSION:
            raise ValueError(
                f"model expects preprocessing {card.preprocessing_version!r}, this code "
                f"implements {PREPROCESSING_VERSION!r}"
            )
        self.network = network
        self.card = card
        self.content_check = content_check
        # One forward pass gives the logit and the content check's distance.
        self._scoring = scoring_network(network, content_check) if content_check else None
        self._cams: CamFunction | None = None

    @classmethod
    def load(cls, path: Path | None = None) -> Classifier:
        """Load a model directory (``None``: the model shipped in ``model/shipped/``)."""
        directory = Path(path) if path is not None else SHIPPED_DIR
        if directory.is_file():  # accept the .keras file itself
            directory = directory.parent
        card = ModelCard.load(directory)
        weights = directory / WEIGHTS_FILE
        if not weights.is_file():
            raise FileNotFoundError(f"{weights} not found beside {directory / 'model_card.json'}")
        content_check = ContentCheck.load(directory, card.model_version, weights_digest(weights))
        return cls(keras.models.load_model(weights, compile=False), card, content_check)

    @property
    def version(self) -> str:
        return self.card.model_version

    def inputs(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """The batch the network sees: ``(N, S, S, 1)`` float32."""
        size = self.card.input_size
        return (
            np.stack([preprocess(image, size) for image in images])
            if images
            else (np.zeros((0, size, size, 1), dtype=np.float32))
        )

    def logits(self, images: Sequence[np.ndarray]) -> np.ndarray:
        batch = self.inputs(images)
        if len(batch) == 0:
            return np.zeros(0, dtype=np.float32)
        return np.asarray(self.network.predict_on_batch(batch))[:, 0]

    def logits_and_distances(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Logits and content-check distances ``(N,)`` each, in one forward pass."""
        if self._scoring is None:
            raise ValueError(f"{self.version} has no content check fitted")
        batch = self.inputs(images)
        if len(batch) == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        logits, distances = self._scoring.predict_on_batch(batch)
        return np.asarray(logits)[:, 0], np.asarray(distances)

    def probabilities(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Calibrated P(pneumonia) per image."""
        return self.card.operating_point.probabilities(self.logits(images))

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """One prediction per image; with a content check, its verdict and distance too."""
        if self.content_check is None or self._scoring is None:
            return [self.decide(float(p)) for p in self.probabilities(images)]
        logits, distances = self.logits_and_distances(images)
        probabilities = self.card.operating_point.probabilities(logits)
        return [
            dataclasses.replace(
                self.decide(float(p)),
                content=self.content_check.verdict(float(d)),
                content_distance=float(d),
            )
            for p, d in zip(probabilities, distances, strict=True)
        ]

    def heatmap(self, image: np.ndarray) -> np.ndarray:
        """Grad-CAM map in [0, 1] at the model's input size for one display-level image."""
        return self.heatmaps([image])[0]

    def heatmaps(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Grad-CAM maps ``(N, S, S)`` for display-level images, in one compiled call."""
        if self._cams is None:
            self._cams = gradcam_function(self.network)
        return self._cams(self.inputs(images))

    def warm_up(self, batch_size: int) -> None:
        """Build the inference and Grad-CAM graphs now, before the first real image.

        Keras traces a graph for the first batch size it sees and, at the second, one for
        every size; each trace costs about as much as scoring a hundred images. A worker
        process pays that here, at start-up, instead of on the first files of a burst.
        """
        blank = np.zeros((self.card.input_size,) * 2, dtype=np.uint8)
        for count in sorted({1, 2, batch_size}):
            self.predict([blank] * count)
            self.heatmaps([blank] * count)

    def decide(self, probability: float) -> Prediction:
        """Label and priority for one calibrated probability, from the card's thresholds."""
        point = self.card.operating_point
        if probability >= point.threshold:
            priority = Priority.URGENT
        elif probability >= point.suspect_threshold:
            priority = Priority.SUSPECT
        else:
            priority = Priority.ROUTINE
        label = Label.PNEUMONIA if probability >= point.threshold else Label.NORMAL
        return Prediction(
            probability=probability,
            label=label,
            priority=priority,
            threshold=point.threshold,
            model_version=self.version,
            suspect_threshold=point.suspect_threshold,
        )


def feature_network(network: keras.Model, layers: Sequence[str]) -> keras.Model:
    """A model on ``network``'s own layers (no copy, no retraining) with two outputs: the
    logit and the content check's features, concatenated in the order of ``layers``.

    A layer name gives the layer's global average (``pool`` is already one and is taken as
    it is); :data:`~model.content_check.INPUT_HISTOGRAM` and
    :data:`~model.content_check.INPUT_LAYOUT` give the input's grey-level histogram and its
    block averages, computed here so the worker and the fit share one definition.
    """
    image = network.inputs[0]
    pooled = []
    for name in layers:
        if name == INPUT_HISTOGRAM:
            pooled.append(_histogram(image))
        elif name == INPUT_LAYOUT:
            blocks = keras.layers.AveragePooling2D(LAYOUT_BLOCK, name="content_layout")(image)
            pooled.append(keras.layers.Flatten(name="content_layout_flat")(blocks))
        else:
            output = network.get_layer(name).output
            if len(output.shape) == 4:
                output = keras.layers.GlobalAveragePooling2D(name=f"content_{name}_gap")(output)
            pooled.append(output)
    features = (
        pooled[0] if len(pooled) == 1 else keras.layers.Concatenate(name="content_features")(pooled)
    )
    return keras.Model(network.inputs, [network.outputs[0], features], name="scoring")


def _histogram(image: keras.KerasTensor) -> keras.KerasTensor:
    """Share of the input's pixels in each of 16 bins of 16 grey levels (inputs are 0..255
    levels over 255): the levels are rounded back to integers first, so the bins are exact."""
    ops = keras.ops
    levels = ops.round(image * 255.0)
    width = 256 // HISTOGRAM_BINS
    bins = ops.cast(ops.clip(ops.floor(levels / width), 0, HISTOGRAM_BINS - 1), "int32")
    flat = ops.reshape(bins, (-1, int(np.prod(image.shape[1:]))))
    return ops.mean(ops.one_hot(flat, HISTOGRAM_BINS), axis=1)


def scoring_network(network: keras.Model, check: ContentCheck) -> keras.Model:
    """The logit and the content check's Mahalanobis distance, in one forward pass.

    The whitening is a fixed dense layer on the pooled features (``f @ W - mean @ W``), so
    the distance costs one D x D product (D = 576) inside TensorFlow's own thread pool; done in
    numpy instead, OpenBLAS's threads contend with TensorFlow's on a busy two-core worker
    and the product cost a millisecond per image instead of microseconds.
    """
    features_model = feature_network(network, check.layers)
    logit, features = features_model.outputs
    whitening = keras.layers.Dense(check.dimension, name="content_whitening", trainable=False)
    whitened = whitening(features)
    whitening.set_weights(
        [
            check.whitening.astype(np.float32),
            (-check.mean @ check.whitening).astype(np.float32),
        ]
    )
    distance = keras.ops.sqrt(keras.ops.sum(keras.ops.square(whitened), axis=-1))
    return keras.Model(network.inputs, [logit, distance], name="scoring_with_content_check")
