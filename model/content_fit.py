"""Fit a model directory's content check (:mod:`model.content_check`) without retraining.

``cxr-triage content-check fit --model DIR --data PEDIATRIC_CXR`` re-derives the split the
model was trained with (:func:`model.dataset.training_split`), computes the features of the
training images (statistics), of the validation images and of the non-chest reference set
(:mod:`model.nonchest`; the cut-offs), and writes ``content_check.npz`` and a
``content_check`` section of the model card. Minutes on two CPU cores: one inference pass
over about 5,000 cached 192 px images.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np

from model import dataset
from model.card import WEIGHTS_FILE, ModelCard
from model.content_check import (
    FEATURE_LAYERS,
    NONCHEST_MARGIN,
    ContentCheck,
    fit_content_check,
    weights_digest,
)
from model.nonchest import expected_count, nonchest_images, to_uint8
from model.predict import feature_network
from model.preprocess import resize_square, to_model_levels

BATCH = 64


def pooled_features(network: keras.Model, images: np.ndarray) -> np.ndarray:
    """The content check's features ``(N, D)`` of uint8 model-level images ``(N, S, S)``."""
    scoring = feature_network(network, FEATURE_LAYERS)
    parts = []
    for start in range(0, len(images), BATCH):
        batch = images[start : start + BATCH, ..., np.newaxis].astype(np.float32) / 255.0
        parts.append(np.asarray(scoring.predict_on_batch(batch)[1]))
    return np.concatenate(parts)


def nonchest_levels(size: int) -> tuple[list[str], np.ndarray]:
    """The non-chest reference set as model-level images, as a header-less PNG reaches the
    worker (8-bit, then the production preprocessing)."""
    names, levels = [], []
    for name, grey in nonchest_images():
        names.append(name)
        levels.append(to_model_levels(resize_square(to_uint8(grey).astype(np.float32), size)))
    if len(names) < expected_count():
        # A smaller set would set a lower ceiling on the cut-off without saying so.
        raise ValueError(
            f"the non-chest reference set is incomplete ({len(names)} of {expected_count()} "
            "images found): install the development extras, which bring scikit-image and "
            "pydicom-data (pip install -e '.[dev]')"
        )
    return names, np.stack(levels)


def fit_model_directory(
    model_dir: Path,
    data_dir: Path,
    cache_dir: Path,
    read_grey: Callable[[Path], np.ndarray],
    population_quantile: float,
) -> tuple[ContentCheck, ModelCard]:
    """Fit, save ``content_check.npz`` beside the weights, and record it in the card."""
    card = ModelCard.load(model_dir)
    split = dataset.training_split(data_dir, card)
    size = card.input_size
    train_x = dataset.load_cached_array(split.train, size, cache_dir, read_grey, "train images")
    val_x = dataset.load_cached_array(
        split.validation, size, cache_dir, read_grey, "validation images"
    )
    nonchest_names, nonchest_x = nonchest_levels(size)
    network = keras.models.load_model(model_dir / WEIGHTS_FILE, compile=False)
    check = fit_content_check(
        card.model_version,
        pooled_features(network, train_x),
        pooled_features(network, val_x),
        pooled_features(network, nonchest_x),
        population_quantile,
        weights_sha256=weights_digest(model_dir / WEIGHTS_FILE),
    )
    inverted = check.distances(pooled_features(network, 255 - val_x))
    check.save(model_dir)
    distances = check.reference_distances
    updated = dataclasses.replace(
        card,
        content_check={
            "command": shlex.join(["cxr-triage", *sys.argv[1:]]),
            "fitted_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "method": "Mahalanobis distance (Ledoit-Wolf covariance, training split) of the "
            "features " + ", ".join(check.layers) + " (layers: global averages; input_*: "
            "the input's 16-bin grey-level histogram and 12 x 12 block averages)",
            "dimension": check.dimension,
            "train_images": len(train_x),
            "validation_images": len(val_x),
            "nonchest_images": nonchest_names,
            "reject_rule": "geometric mean of the farthest validation distance and the "
            "nearest non-chest reference distance",
            "ceiling_rule": f"nearest non-chest reference distance / {NONCHEST_MARGIN:g}",
            "population_quantile": population_quantile,
            "population_threshold": check.population_threshold,
            "reject_threshold": check.reject_threshold,
            "ceiling": check.ceiling,
            "validation_farthest": float(distances.max()),
            "nonchest_nearest": float(check.nonchest_distances.min()),
            "nonchest_refused": int((check.nonchest_distances > check.reject_threshold).sum()),
            "inverted_validation_refused": int((inverted > check.reject_threshold).sum()),
            "validation_rejected": float(np.mean(distances > check.reject_threshold)),
            "validation_flagged_or_rejected": float(
                np.mean(distances > check.population_threshold)
            ),
        },
    )
    updated.save(model_dir)
    return check, updated
