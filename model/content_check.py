"""Is this image a frontal chest radiograph like the ones the model learnt from?

The network answers every image it is given: a photograph of a brick wall gets a probability
as readily as a chest radiograph. Headers cannot be relied on (a JPEG has none; a dental
panoramic CR carries no body part), so the check looks at the pixels: the Mahalanobis distance
of one feature vector per image to its distribution over the training images. The vector
joins what the network sees and what the film looks like:

- the network's own pooled features (the ``pool`` layer, 256 values, and the global average
  of ``stage3_out``, 160 values): what the network makes of the image;
- the grey-level histogram of its input (16 bins of 16 levels): radiographs, exposed and
  processed, fill the grey scale their own way; a nearly flat test pattern or a photograph
  does not;
- its layout: the input averaged to 12 x 12 (144 values): a frontal chest film has lungs
  either side of a bright mediastinum, a diaphragm below, wherever the child was framed.

The network's features alone left the nearest photographs closer than the farthest
validation children (the check had no margin); the histogram and the layout separate them
(see the README's content-check section for the comparison). Everything comes out of the same
forward pass as the logit (:func:`model.predict.feature_network`), so the check costs one
576 x 576 product per image.

The mean and a shrunk (Ledoit-Wolf) covariance are fitted on the training split; the
cut-offs are placed on the validation split, which the fit never saw, and on a reference
set of images that are not chest radiographs (:mod:`model.nonchest`):

- ``reject_threshold``: beyond it the image is not scored (``not_chest_radiograph``). It
  sits halfway, in ratio, between the farthest validation image and the nearest non-chest
  image, so both sides have the same relative margin;
- ``population_threshold`` (lower): between the two, the image is scored and flagged
  ``outside_training_population``;
- ``ceiling``: the highest ``reject_threshold`` that still refuses every non-chest reference
  image with a 10 % margin. A site calibration (:func:`site_cut_offs`) may raise the
  cut-offs for a site whose own films sit farther out, never above the ceiling.

All are stored in ``content_check.npz`` beside the weights, with the validation distances
(the drift watch's reference). This module is numpy only: the worker's database side and
the CLI's ``status`` use it without TensorFlow.
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np

CONTENT_CHECK_FILE = "content_check.npz"
#: Not layers: features of the network's input (``model.predict.feature_network``).
INPUT_HISTOGRAM = "input_histogram16"  # share of pixels in each of 16 bins of 16 grey levels
INPUT_LAYOUT = "input_layout12"  # the input averaged over 16 x 16 blocks: 12 x 12 values
HISTOGRAM_BINS = 16
LAYOUT_BLOCK = 16
#: What makes the feature vector, in order: layers (their global averages; ``pool`` is already
#: one), then the input's histogram and layout.
FEATURE_LAYERS = ("pool", "stage3_out", INPUT_HISTOGRAM, INPUT_LAYOUT)
#: The ceiling keeps this relative margin below the nearest non-chest reference image.
NONCHEST_MARGIN = 1.1
#: Fewer non-chest reference images than this cannot place a cut-off.
MIN_NONCHEST = 10


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
    #: The highest reject_threshold a site calibration may set (0: the reject threshold).
    ceiling: float = 0.0
    #: The non-chest reference set's distances when fitted (what the ceiling came from).
    nonchest_distances: np.ndarray = field(default_factory=lambda: np.zeros(0))

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
        if self.ceiling and self.ceiling < self.reject_threshold:
            raise ValueError(
                f"reject_threshold ({self.reject_threshold}) is above the ceiling "
                f"({self.ceiling}) that keeps every non-chest reference image refused"
            )

    @property
    def highest_reject_threshold(self) -> float:
        """What a site calibration may raise ``reject_threshold`` to, at most."""
        return self.ceiling or self.reject_threshold

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
                ceiling=np.array(self.ceiling),
                nonchest_distances=self.nonchest_distances,
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
                ceiling=float(data["ceiling"]) if "ceiling" in data else 0.0,
                nonchest_distances=(
                    data["nonchest_distances"] if "nonchest_distances" in data else np.zeros(0)
                ),
            )


def fit_content_check(
    model_version: str,
    train_features: np.ndarray,
    validation_features: np.ndarray,
    nonchest_features: np.ndarray,
    population_quantile: float = 0.985,
    layers: tuple[str, ...] = FEATURE_LAYERS,
    weights_sha256: str = "",
) -> ContentCheck:
    """Fit the statistics on ``train_features``; place the cut-offs on the validation ones and
    on the non-chest reference set's.

    ``reject_threshold`` is the geometric mean of the farthest validation distance and the
    nearest non-chest distance; ``population_quantile`` of the validation distances (0.985)
    the flag cut-off; ``ceiling`` the nearest non-chest distance over :data:`NONCHEST_MARGIN`.
    Raises ``ValueError`` when the features do not separate the two sets: a check that
    cannot refuse every non-chest reference image without refusing validation children has
    no safe cut-off, and is not written.
    """
    from sklearn.covariance import LedoitWolf

    if not 0.5 <= population_quantile < 1.0:
        raise ValueError(f"need 0.5 <= population_quantile ({population_quantile}) < 1")
    if len(train_features) <= train_features.shape[1] // 4:
        raise ValueError(
            f"{len(train_features)} training images are too few for {train_features.shape[1]} "
            "features"
        )
    if len(nonchest_features) < MIN_NONCHEST:
        raise ValueError(
            f"{len(nonchest_features)} non-chest reference images are too few to place the "
            f"cut-off (at least {MIN_NONCHEST})"
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
    nonchest = check.distances(nonchest_features)
    farthest, nearest = float(distances.max()), float(nonchest.min())
    if not nearest > NONCHEST_MARGIN * farthest:
        raise ValueError(
            f"the nearest non-chest reference image (distance {nearest:.2f}) is not "
            f"{NONCHEST_MARGIN:g} x farther than the farthest validation image "
            f"({farthest:.2f}): these features leave no safe cut-off"
        )
    reject = math.sqrt(farthest * nearest)
    # "higher": the cut-off is an observed distance, so at most 1 - quantile lie beyond it
    population = float(np.quantile(distances, population_quantile, method="higher"))
    return ContentCheck(
        model_version=model_version,
        layers=layers,
        mean=check.mean,
        whitening=whitening,
        population_threshold=min(population, reject),
        reject_threshold=reject,
        reference_distances=distances,
        weights_sha256=weights_sha256,
        ceiling=max(reject, nearest / NONCHEST_MARGIN),
        nonchest_distances=nonchest,
    )


@dataclass(frozen=True)
class SiteCutOffs:
    """Cut-offs refitted on a site's own sample of chest films (:func:`site_cut_offs`)."""

    check: ContentCheck
    record: dict[str, object]  # for the model card: the rule, the sample, what it showed


def conformal_cut_off(distances: np.ndarray, alpha: float) -> tuple[float, bool]:
    """The split-conformal cut-off: the k-th smallest of ``n`` distances, k = ceil((1 - alpha)
    (n + 1)). A new film exchangeable with the sample lies beyond it with probability at most
    ``alpha``, whatever the distances' distribution. Returns ``(cut_off, demonstrated)``;
    with too few films (k > n) the sample's largest distance and False."""
    ordered = np.sort(np.asarray(distances, dtype=np.float64))
    k = math.ceil((1 - alpha) * (len(ordered) + 1))
    if k > len(ordered):
        return float(ordered[-1]), False
    return float(ordered[k - 1]), True


def site_cut_offs(
    check: ContentCheck,
    site_distances: np.ndarray,
    reject_alpha: float = 0.005,
    flag_alpha: float = 0.015,
) -> SiteCutOffs:
    """Raise the cut-offs so a site's own chest films are refused at most ``reject_alpha``
    (and flagged at most ``flag_alpha``) of the time, never above the ceiling.

    Only ever raises: the validation children stay as well served as before, and the ceiling
    keeps every non-chest reference image refused. A site whose films need more than the
    ceiling gets the ceiling, and the record says how many of its films are still refused.
    Leave-one-out refusals (each film judged by cut-offs refitted without it) are recorded
    as the honest estimate: the in-sample figure is zero by construction.
    """
    distances = np.asarray(site_distances, dtype=np.float64)
    if len(distances) < 20:
        raise ValueError(f"{len(distances)} site films are too few to place a cut-off")
    ceiling = check.highest_reject_threshold

    def fit(sample: np.ndarray) -> tuple[float, float, bool, bool]:
        reject_cut, reject_shown = conformal_cut_off(sample, reject_alpha)
        flag_cut, flag_shown = conformal_cut_off(sample, flag_alpha)
        reject = min(ceiling, max(check.reject_threshold, reject_cut))
        population = min(reject, max(check.population_threshold, flag_cut))
        return reject, population, reject_shown, flag_shown

    reject, population, reject_shown, flag_shown = fit(distances)
    left_out = [fit(np.delete(distances, i))[0] for i in range(len(distances))]
    loo_refused = int(sum(d > r for d, r in zip(distances, left_out, strict=True)))
    refitted = ContentCheck(
        model_version=check.model_version,
        layers=check.layers,
        mean=check.mean,
        whitening=check.whitening,
        population_threshold=population,
        reject_threshold=reject,
        reference_distances=check.reference_distances,
        weights_sha256=check.weights_sha256,
        ceiling=check.ceiling,
        nonchest_distances=check.nonchest_distances,
    )
    record: dict[str, object] = {
        "method": "split-conformal cut-offs on the site's films (the k-th smallest distance, "
        "k = ceil((1 - alpha) (n + 1))), never below the shipped cut-offs nor above the "
        "ceiling that keeps every non-chest reference image refused",
        "films": len(distances),
        "reject_alpha": reject_alpha,
        "flag_alpha": flag_alpha,
        "guarantee_demonstrated": {"reject": reject_shown, "flag": flag_shown},
        "reject_threshold_before": check.reject_threshold,
        "population_threshold_before": check.population_threshold,
        "reject_threshold": reject,
        "population_threshold": population,
        "ceiling": ceiling,
        "at_ceiling": reject >= ceiling,
        "refused_before": int((distances > check.reject_threshold).sum()),
        "flagged_or_refused_before": int((distances > check.population_threshold).sum()),
        "refused_after_in_sample": int((distances > reject).sum()),
        "refused_after_leave_one_out": loo_refused,
        "flagged_or_refused_after_in_sample": int((distances > population).sum()),
    }
    return SiteCutOffs(refitted, record)


def weights_digest(path: Path) -> str:
    """SHA-256 of a weights file: ties a fitted check to the exact network it measured."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
