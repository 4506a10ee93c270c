"""Is this image a frontal chest radiograph like the ones the model learnt from?

The network answers every image it is given: a photograph of a brick wall gets a probability
as readily as a chest radiograph. Headers cannot be relied on (a JPEG has none; a dental
panoramic CR carries no body part), so the check looks at the pixels, through the network's
own eyes: the Mahalanobis distance of the image's pooled features (the ``pool`` layer, 256
values, and the global average of ``stage3_out``, 160 values) to their distribution over the
training images. The features come out of the same forward pass as the logit
(:func:`model.predict.feature_network`), so the check costs one 416 x 416 product per image.

The mean and a shrunk (Ledoit-Wolf) covariance are fitted on the training split; the two
cut-offs are chosen on the validation split, which the fit never saw:

- ``reject_threshold``: beyond it the image is not scored (``not_chest_radiograph``);
- ``population_threshold`` (lower): between the two, the image is scored and flagged
  ``outside_training_population``.

Both are stored in ``content_check.npz`` beside the weights, with the validation distances
(the drift watch's reference). This module is numpy only: the worker's database side and
the CLI's ``status`` use it without TensorFlow.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

CONTENT_CHECK_FILE = "content_check.npz"
#: Layers whose global averages make the feature vector, in order. ``pool`` is already one.
FEATURE_LAYERS = ("pool", "stage3_out")


class ContentVerdict(StrEnum):
    """What the content check says about one image. Values are stored as flags/reasons."""

    IN_POPULATION = "in_population"
    OUTSIDE_POPULATION = "outside_training_population"  # scored and flagged
    NOT_CHEST = "not_chest_radiograph"  # not scored: rejected


@dataclass(frozen=True)
class ContentCheck:
    """A fitted content check: the training features' mean and whitening, two cut-offs."""

    model_version: str
    layers: tuple[str, ...]
    mean: np.ndarray  # (D,)
    whitening: np.ndarray  # (D, D): distance = || (f - mean) @ whitening ||
    population_threshold: float
    reject_threshold: float
    reference_distances: np.ndarray  # the validation split's distances (drift reference)
    weights_sha256: str = ""  # the model.keras the features came from

    def __post_init__(self) -> None:
        dim = self.mean.shape[0]
        if self.mean.ndim != 1 or self.whitening.shape != (dim, dim):
            raise ValueError(
                f"mean {self.mean.shape} and whitening {self.whitening.shape} do not match"
            )
        if not 0.0 < self.population_threshold <= self.reject_threshold:
            raise ValueError(
                f"need 0 < population_threshold ({self.population_threshold}) <= "
                f"reject_threshold ({self.reject_threshold})"
            )

    @property
    def dimension(self) -> int:
        return int(self.mean.shape[0])

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance per row of ``features`` ``(N, D)``; NaN features give inf."""
        centred = np.asarray(features, dtype=np.float64) - self.mean
        distance = np.linalg.norm(centred @ self.whitening, axis=1)
        return np.where(np.isfinite(distance), distance, np.inf)

    def verdict(self, distance: float) -> ContentVerdict:
        if not distance <= self.reject_threshold:  # NaN included
            return ContentVerdict.NOT_CHEST
        if distance > self.population_threshold:
            return ContentVerdict.OUTSIDE_POPULATION
        return ContentVerdict.IN_POPULATION

    def save(self, directory: Path) -> Path:
        path = directory / CONTENT_CHECK_FILE
        with path.open("wb") as f:
            np.savez(
                f,
                model_version=np.array(self.model_version),
                layers=np.array(self.layers),
                mean=self.mean,
                whitening=self.whitening,
                thresholds=np.array([self.population_threshold, self.reject_threshold]),
                reference_distances=self.reference_distances,
                weights_sha256=np.array(self.weights_sha256),
            )
        return path

    @classmethod
    def load(
        cls, directory: Path, model_version: str, weights_sha256: str | None = None
    ) -> ContentCheck | None:
        """The check stored in ``directory``, or None if the model has none.

        Raises ``ValueError`` when the file was fitted for another model (another version, or
        other weights under the same version): features of one network mean nothing to
        another's statistics.
        """
        path = directory / CONTENT_CHECK_FILE
        if not path.is_file():
            return None
        try:
            archive = np.load(path, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            raise ValueError(f"{path} is not a readable content check: {error}") from error
        with archive as data:
            fitted_for = str(data["model_version"])
            # A site calibration (``<version>+site-<name>``) keeps the weights, and so the
            # features this check was fitted on; the weights' hash below still guards them.
            if fitted_for != model_version.split("+site-")[0]:
                raise ValueError(
                    f"{path} was fitted for {fitted_for!r}, not {model_version!r}: rerun "
                    "`cxr-triage content-check fit` on this model"
                )
            fitted_weights = str(data["weights_sha256"]) if "weights_sha256" in data else ""
            if weights_sha256 is not None and fitted_weights != weights_sha256:
                raise ValueError(
                    f"{path} was fitted on other weights than {directory}'s model.keras: "
                    "rerun `cxr-triage content-check fit` on this model"
                )
            population, reject = (float(t) for t in data["thresholds"])
            return cls(
                model_version=fitted_for,
                layers=tuple(str(name) for name in data["layers"]),
                mean=data["mean"],
                whitening=data["whitening"],
                population_threshold=population,
                reject_threshold=reject,
                reference_distances=data["reference_distances"],
                weights_sha256=fitted_weights,
            )


def fit_content_check(
    model_version: str,
    train_features: np.ndarray,
    validation_features: np.ndarray,
    population_quantile: float,
    reject_quantile: float,
    layers: tuple[str, ...] = FEATURE_LAYERS,
    weights_sha256: str = "",
) -> ContentCheck:
    """Fit the statistics on ``train_features``; place both cut-offs on the validation ones.

    ``reject_quantile`` of the validation distances is the rejection cut-off (0.995: at most
    0.5 % of validation images refused); ``population_quantile`` (lower) the flag cut-off.
    """
    from sklearn.covariance import LedoitWolf

    if not 0.5 <= population_quantile <= reject_quantile <= 1.0:
        raise ValueError(
            f"need 0.5 <= population_quantile ({population_quantile}) <= reject_quantile "
            f"({reject_quantile}) <= 1"
        )
    if len(train_features) <= train_features.shape[1] // 4:
        raise ValueError(
            f"{len(train_features)} training images are too few for {train_features.shape[1]} "
            "features"
        )
    estimate = LedoitWolf().fit(np.asarray(train_features, dtype=np.float64))
    # precision = L L^T (Cholesky), so (f - m)^T P (f - m) = || (f - m) @ L ||^2
    whitening = np.linalg.cholesky(estimate.precision_)
    check = ContentCheck(
        model_version=model_version,
        layers=layers,
        mean=estimate.location_,
        whitening=whitening,
        population_threshold=1.0,
        reject_threshold=1.0,
        reference_distances=np.zeros(0),
    )
    distances = check.distances(validation_features)
    # "higher": each cut-off is an observed distance, so at most 1 - quantile lie beyond it
    population, reject = np.quantile(
        distances, [population_quantile, reject_quantile], method="higher"
    )
    return ContentCheck(
        model_version=model_version,
        layers=layers,
        mean=check.mean,
        whitening=whitening,
        population_threshold=float(population),
        reject_threshold=float(reject),
        reference_distances=distances,
        weights_sha256=weights_sha256,
    )


def weights_digest(path: Path) -> str:
    """SHA-256 of a weights file: ties a fitted check to the exact network it measured."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
