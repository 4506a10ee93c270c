"""Refit a trained model's operating point on its validation split, without retraining.

A department that wants another sensitivity policy (say, 0.97 instead of 0.95) changes the
model card, not the weights: the split is re-derived from the card's seed and fraction,
checked against the one recorded at training time, and scored again.
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
from model.calibration import calibrate_on_validation
from model.card import WEIGHTS_FILE, ModelCard
from model.preprocess import network_input
from model.train import PREDICTIONS_FILE


def recalibrate(
    model_dir: Path,
    data_dir: Path,
    cache_dir: Path,
    read_grey: Callable[[Path], np.ndarray],
    target_sensitivity: float,
    suspect_target_sensitivity: float,
) -> ModelCard:
    """Rewrite ``model_dir``'s card with a new operating point and validation metrics."""
    card = ModelCard.load(model_dir)
    if card.site_calibration:
        raise ValueError(
            f"{card.model_version} is calibrated for the site "
            f"{card.site_calibration.get('site')!r}: refitting it on the training validation "
            "split would undo that; recalibrate its source model, or run calibrate --site again"
        )
    split = dataset.training_split(data_dir, card)
    val_x = dataset.load_cached_array(
        split.validation, card.input_size, cache_dir, read_grey, desc="validation images"
    )
    val_y = np.array([r.label for r in split.validation], dtype=np.float32)
    network = keras.models.load_model(model_dir / WEIGHTS_FILE, compile=False)
    logits = network.predict(network_input(val_x), verbose=0)[:, 0]
    point, probabilities, metrics = calibrate_on_validation(
        logits,
        val_y,
        target_sensitivity,
        suspect_target_sensitivity,
        seed=card.training["config"]["seed"],
    )
    recalibrated = dataclasses.replace(
        card,
        operating_point=point,
        validation_metrics=metrics,
        training={
            **card.training,
            "recalibrated": {
                "command": shlex.join(["cxr-triage", *sys.argv[1:]]),
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        },
    )
    recalibrated.save(model_dir)
    dataset.write_predictions(model_dir / PREDICTIONS_FILE, split.validation, probabilities)
    return recalibrated
