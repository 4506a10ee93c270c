"""Train the CNN on the patient-level split, then calibrate and write a model directory.

The run directory holds ``model.keras`` + ``model_card.json`` (what ``Classifier.load``
reads), ``history.json``, ``curves.png`` and ``validation_predictions.csv``. Copying the
first two into ``model/shipped/`` ships the model.
"""

from __future__ import annotations

import json
import logging
import platform
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from model import dataset
from model.augment import build_augmenter
from model.calibration import calibrate_on_validation
from model.card import WEIGHTS_FILE, ModelCard
from model.consistency import (
    CropConsistencyLoss,
    flatten_pairs,
    paired_validation_views,
    tighter_crop,
)
from model.geometry import FieldOfView, random_field_of_view
from model.network import DEFAULT_WIDTHS, build_model
from model.plots import plot_training_curves
from model.preprocess import PREPROCESSING_VERSION, network_input, resize_square, to_model_levels

log = logging.getLogger(__name__)

PREDICTIONS_FILE = "validation_predictions.csv"


@dataclass(frozen=True)
class TrainConfig:
    data_dir: Path
    out_dir: Path
    cache_dir: Path
    epochs: int = 40
    batch_size: int = 32
    input_size: int = 192
    widths: tuple[int, ...] = DEFAULT_WIDTHS
    dropout: float = 0.3
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    validation_fraction: float = 0.15
    seed: int = 20261125
    patience: int = 10
    target_sensitivity: float = 0.95
    suspect_target_sensitivity: float = 0.99
    max_images: int | None = None  # subsample (stratified by class) for smoke runs
    field_of_view: bool = True  # random crops that take away the framing shortcut
    fov: FieldOfView = field(default_factory=FieldOfView)  # their distribution
    init_from: Path | None = None  # start from this model directory's weights
    # > 0: each training view is paired with a tighter top-and-bottom crop of itself and
    # the squared gap between their logits is penalised with this weight (model/consistency.py).
    crop_consistency: float = 0.0
    steps_per_epoch: int | None = None
    model_version: str = field(default_factory=lambda: datetime.now(UTC).strftime("cxr-%Y%m%d"))


def train(config: TrainConfig, read_grey: Callable[[Path], np.ndarray]) -> ModelCard:
    """Run the whole recipe and return the model card written into ``config.out_dir``."""
    started = time.monotonic()
    keras.utils.set_random_seed(config.seed)
    config.out_dir.mkdir(parents=True, exist_ok=True)

    records = dataset.load_manifest(config.data_dir)
    if config.max_images:
        records = dataset.stratified_subsample(records, config.max_images, config.seed)
    hashes = dataset.content_hashes(records)
    split = dataset.patient_split(records, hashes, config.validation_fraction, config.seed)
    log.info("split: %s", json.dumps(split.summary()))
    paired = config.crop_consistency > 0
    if paired and not config.field_of_view:
        raise ValueError("crop consistency needs the field-of-view views (field_of_view=True)")
    if config.field_of_view:
        originals = dataset.load_cached_originals(
            split.train, config.cache_dir, read_grey, desc="train images"
        )
        train_data = _field_of_view_views(originals, split.train, config, paired)
    else:
        train_data = tf.data.Dataset.from_tensor_slices(
            dataset.load_cached_array(
                split.train, config.input_size, config.cache_dir, read_grey, desc="train images"
            )
        )
    val_x = dataset.load_cached_array(
        split.validation, config.input_size, config.cache_dir, read_grey, desc="validation images"
    )
    train_y = np.array([r.label for r in split.train], dtype=np.float32)
    val_y = np.array([r.label for r in split.validation], dtype=np.float32)
    if paired:
        # Validation pairs each image with its w/h 1.5 crop, so the monitored ROC AUC pools
        # both views: an epoch that lets tight framing push normals up scores worse.
        val_views = paired_validation_views(
            val_x,
            dataset.load_cached_originals(
                split.validation, config.cache_dir, read_grey, desc="validation originals"
            ),
            [r.squashed_copy for r in split.validation],
            config.input_size,
        )
    else:
        val_views = val_x

    net = build_model(config.input_size, config.widths, config.dropout, config.weight_decay)
    if config.init_from is not None:
        start = keras.models.load_model(config.init_from / WEIGHTS_FILE, compile=False)
        net.set_weights(start.get_weights())
    steps = config.steps_per_epoch or int(np.ceil(len(train_y) / config.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate / 10,
        decay_steps=steps * config.epochs,
        warmup_target=config.learning_rate,
        warmup_steps=steps,
    )
    net.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=(
            CropConsistencyLoss(config.crop_consistency)
            if paired
            else keras.losses.BinaryCrossentropy(from_logits=True)
        ),
        metrics=[
            keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy"),
            keras.metrics.AUC(from_logits=True, name="auc"),
        ],
    )
    best_path = config.out_dir / WEIGHTS_FILE
    fit_started = time.monotonic()
    history = net.fit(
        _batches(train_data, train_y, config.batch_size, config.seed, augment=True, paired=paired),
        validation_data=_batches(
            tf.data.Dataset.from_tensor_slices(val_views),
            val_y,
            64,
            config.seed,
            augment=False,
            paired=paired,
        ),
        epochs=config.epochs,
        steps_per_epoch=steps,
        class_weight=_balanced_class_weights(train_y),
        callbacks=[
            keras.callbacks.ModelCheckpoint(
                best_path, monitor="val_auc", mode="max", save_best_only=True
            ),
            keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=config.patience),
            # An interrupted run started again with the same command resumes at its last
            # finished epoch (weights, optimizer and schedule), not from scratch.
            keras.callbacks.BackupAndRestore(config.out_dir / "resume"),
            EpochProgress(config.epochs, steps),
        ],
        verbose=0,
    )
    fit_seconds = time.monotonic() - fit_started

    best = keras.models.load_model(best_path, compile=False)
    best.save(best_path)  # ship the weights without the optimizer state
    val_logits = best.predict(network_input(val_x), batch_size=64, verbose=0)[:, 0]
    point, val_probabilities, metrics = calibrate_on_validation(
        val_logits,
        val_y,
        config.target_sensitivity,
        config.suspect_target_sensitivity,
        seed=config.seed,
    )
    epochs_run = len(history.history["loss"])
    best_epoch = int(np.argmax(history.history["val_auc"])) + 1
    card = ModelCard(
        model_version=config.model_version,
        input_size=config.input_size,
        preprocessing_version=PREPROCESSING_VERSION,
        labels=dataset.LABELS,
        operating_point=point,
        training={
            "command": shlex.join(["cxr-triage", *sys.argv[1:]]) if sys.argv else "",
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "config": _jsonable(asdict(config)),
            "epochs_run": epochs_run,
            "best_epoch": best_epoch,
            "fit_wall_seconds": round(fit_seconds, 1),
            "total_wall_seconds": round(time.monotonic() - started, 1),
            "train_images_per_second": round(
                epochs_run * steps * config.batch_size / fit_seconds, 1
            ),
            "machine": f"{platform.machine()}, {_cpu_count()} CPU cores, TF {tf.__version__}",
            "parameters": int(net.count_params()),
            "initialised_from": (
                ModelCard.load(config.init_from).model_version if config.init_from else None
            ),
        },
        data={
            "source": "Kermany et al. 2018 pediatric chest X-ray, train folder (+16-image val)",
            "manifest_sha256": dataset.manifest_sha256(config.data_dir),
            "split": split.summary(),
            "validation_fraction": config.validation_fraction,
        },
        validation_metrics=metrics,
    )
    card.save(config.out_dir)
    (config.out_dir / "history.json").write_text(json.dumps(history.history, indent=1))
    plot_training_curves(history.history, config.out_dir / "curves.png")
    dataset.write_predictions(
        config.out_dir / PREDICTIONS_FILE, split.validation, val_probabilities
    )
    return card


def _field_of_view_views(
    originals: list[np.ndarray],
    records: tuple[dataset.Record, ...],
    config: TrainConfig,
    paired: bool = False,
) -> tf.data.Dataset:
    """One random crop of each record, preprocessed as production preprocesses.

    Each pass (epoch) draws new crops in record order; the shuffle in :func:`_batches`
    mixes them, as it does the cached squares. ``paired``: each element is the view and a
    tighter top-and-bottom crop of it, stacked ``(2, S, S)``.
    """
    rng = np.random.default_rng(config.seed)
    fov = config.fov
    squashed = [r.squashed_copy for r in records]
    size = config.input_size

    def levels(view: np.ndarray) -> np.ndarray:
        return to_model_levels(resize_square(view, size))

    def views() -> object:
        for grey, squashed_copy in zip(originals, squashed, strict=True):
            view = random_field_of_view(grey, squashed_copy, rng, fov)
            if paired:
                yield np.stack([levels(view), levels(tighter_crop(view, rng))])
            else:
                yield levels(view)

    shape = (2, size, size) if paired else (size, size)
    return tf.data.Dataset.from_generator(views, output_signature=tf.TensorSpec(shape, tf.uint8))


def _batches(
    images: tf.data.Dataset,
    y: np.ndarray,
    batch_size: int,
    seed: int,
    augment: bool,
    paired: bool = False,
) -> tf.data.Dataset:
    """uint8 images -> float [0, 1] batches; augmented and reshuffled each epoch if training.

    ``paired``: elements are ``(2, S, S)`` view pairs; a batch of B pairs becomes 2 B images,
    the B first views then their B partners (what :class:`CropConsistencyLoss` expects).
    """
    data = tf.data.Dataset.zip((images, tf.data.Dataset.from_tensor_slices(y)))
    if augment:
        data = data.shuffle(len(y), seed=seed, reshuffle_each_iteration=True).repeat()
    data = data.batch(batch_size)
    if paired:
        data = data.map(flatten_pairs)
    data = data.map(
        lambda images, labels: (tf.cast(images[..., tf.newaxis], tf.float32) / 255.0, labels)
    )
    if augment:
        augmenter = build_augmenter(seed)
        data = data.map(lambda images, labels: (augmenter(images, training=True), labels))
    return data.prefetch(2)


def _balanced_class_weights(labels: np.ndarray) -> dict[int, float]:
    """Weights that make both classes contribute equally to the loss (2.9 : 1 imbalance)."""
    counts = np.bincount(labels.astype(int), minlength=2)
    return {c: float(len(labels) / (2 * counts[c])) for c in (0, 1)}


class EpochProgress(keras.callbacks.Callback):
    """One tqdm bar per epoch, then a line with the epoch's metrics."""

    def __init__(self, epochs: int, steps: int) -> None:
        super().__init__()
        self.epochs = epochs
        self.steps = steps
        self.bar: tqdm | None = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self.bar = tqdm(
            total=self.steps,
            desc=f"epoch {epoch + 1}/{self.epochs}",
            unit="batch",
            leave=False,
            mininterval=5,
        )

    def on_train_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(
                loss=f"{(logs or {}).get('loss', float('nan')):.3f}", refresh=False
            )

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        if self.bar is not None:
            elapsed = self.bar.format_dict["elapsed"]
            self.bar.close()
        summary = "  ".join(
            f"{k}={v:.4f}" for k, v in sorted((logs or {}).items()) if isinstance(v, float)
        )
        tqdm.write(f"epoch {epoch + 1}/{self.epochs} ({elapsed:.0f}s): {summary}")


def _jsonable(value: object) -> object:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0))
