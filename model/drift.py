"""Drift statistics: is a stream of predictions still the population the model was validated on?

When a site's images drift (a new detector, a new processing curve, a wrong presentation
LUT), the model keeps answering and the share of URGENT cases silently changes. The worker
therefore counts, per UTC day and model version, the histogram of calibrated probabilities,
of content-check distances, the priorities and the content verdicts, and this module
compares a window of those counts (:mod:`db.drift_counts`: the last 7 days, pooled) with
the model's reference:

- the reference is the validation split's probabilities (``validation_predictions.csv``
  beside the weights; ``site_predictions.csv`` instead when a site calibration wrote one)
  and the validation distances stored in ``content_check.npz``;
- **URGENT share** against its expected band: the central 99 % binomial interval of the
  reference share for the window's number of cases. Outside it, with at least
  :data:`MIN_CASES` cases, is a warning (logged by the worker, shown by ``status``, the
  review page and ``/metrics``). With few cases the band is wide: no false alarms from noise;
- **PSI** (population stability index, over the reference's deciles) and **KS** (largest CDF
  gap) of scores and of distances. PSI > 0.25 is the usual "significant shift"; it warns
  from :data:`MIN_PSI_CASES` cases on (a shifted distance means the images themselves
  changed: an export or processing change, a wrong presentation LUT).

Numpy and scipy only: ``cxr-triage status`` and the web app use it without TensorFlow. The
counting, the warnings in the log and the gauges are in :mod:`worker.drift_watch`.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
from scipy.stats import binom

from model.card import SHIPPED_DIR, ModelCard
from model.content_check import ContentCheck, ContentVerdict
from model.prediction import Prediction, Priority

SCORE_BINS = 50  # probability bins of width 0.02
DISTANCE_BIN_WIDTH = 0.5
DISTANCE_BINS = 200  # 0 .. 100; farther counts in the last bin
CONTENT_BINS = {
    ContentVerdict.IN_POPULATION: 0,
    ContentVerdict.OUTSIDE_POPULATION: 1,
    ContentVerdict.NOT_CHEST: 2,
}
CONTENT_UNCHECKED_BIN = 3
MIN_CASES = 30  # fewer cases in the window: no URGENT-share warning, whatever the share
#: PSI over 10 groups has a sampling floor of about 9 / n: below 100 cases it cannot warn.
MIN_PSI_CASES = 100
BAND = 0.99  # central binomial interval of the URGENT share
PSI_WARNING = 0.25
SITE_PREDICTIONS = "site_predictions.csv"
VALIDATION_PREDICTIONS = "validation_predictions.csv"


def score_bin(probability: float) -> int:
    return min(int(probability * SCORE_BINS), SCORE_BINS - 1)


def distance_bin(distance: float) -> int:
    if not np.isfinite(distance):
        return DISTANCE_BINS - 1
    return min(int(max(distance, 0.0) / DISTANCE_BIN_WIDTH), DISTANCE_BINS - 1)


def batch_bins(
    predictions: Iterable[tuple[Prediction, bool]],
) -> dict[str, Counter[tuple[str, int]]]:
    """``model_version -> {(measure, bin): count}`` for ``(prediction, scored)`` pairs.

    A rejected image (not a chest radiograph) counts in ``content`` and ``distance`` only:
    its probability was never used.
    """
    result: dict[str, Counter[tuple[str, int]]] = {}
    for prediction, scored in predictions:
        bins = result.setdefault(prediction.model_version, Counter())
        if scored:
            bins[("score", score_bin(prediction.probability))] += 1
            bins[("priority", prediction.priority.rank)] += 1
        content = (
            CONTENT_BINS[prediction.content]
            if prediction.content is not None
            else CONTENT_UNCHECKED_BIN
        )
        bins[("content", content)] += 1
        if prediction.content_distance is not None:
            bins[("distance", distance_bin(prediction.content_distance))] += 1
    return result


@dataclass(frozen=True)
class Reference:
    """What the stream is compared with: one model's validation (or site) sample."""

    model_version: str
    source: str  # "validation" or "site"
    probabilities: np.ndarray
    distances: np.ndarray  # empty when the model has no content check
    threshold: float
    suspect_threshold: float

    @property
    def urgent_share(self) -> float:
        return float(np.mean(self.probabilities >= self.threshold))

    @property
    def suspect_share(self) -> float:
        p = self.probabilities
        return float(np.mean((p >= self.suspect_threshold) & (p < self.threshold)))

    @classmethod
    def load(cls, model_dir: Path | None) -> Reference:
        """From a model directory (None: the shipped model), without TensorFlow."""
        directory = Path(model_dir) if model_dir is not None else SHIPPED_DIR
        if directory.is_file():  # CXR_MODEL_PATH may name the weights, as Classifier allows
            directory = directory.parent
        card = ModelCard.load(directory)
        site = directory / SITE_PREDICTIONS
        source, table = ("site", site) if site.is_file() else ("validation", None)
        table = table or directory / VALIDATION_PREDICTIONS
        with table.open(newline="") as f:
            probabilities = np.array([float(row["probability"]) for row in csv.DictReader(f)])
        check = ContentCheck.load(directory, card.model_version)
        return cls(
            model_version=card.model_version,
            source=source,
            probabilities=probabilities,
            distances=check.reference_distances if check is not None else np.zeros(0),
            threshold=card.operating_point.threshold,
            suspect_threshold=card.operating_point.suspect_threshold,
        )


@dataclass(frozen=True)
class DriftReport:
    """One window of days against the reference. Shares are None with no scored case."""

    model_version: str
    reference_source: str
    first_day: date
    days: int
    cases: int  # scored images
    not_chest: int  # rejected by the content check
    outside_population: int
    urgent_share: float | None
    suspect_share: float | None
    expected_urgent_share: float
    urgent_band: tuple[float, float] | None  # 99 % binomial band for ``cases``
    score_psi: float | None
    score_ks: float | None
    distance_psi: float | None
    distance_ks: float | None
    warnings: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, object]:
        return {
            "model_version": self.model_version,
            "reference": self.reference_source,
            "first_day": self.first_day.isoformat(),
            "days": self.days,
            "cases": self.cases,
            "not_chest_radiograph": self.not_chest,
            "outside_training_population": self.outside_population,
            "urgent_share": self.urgent_share,
            "suspect_share": self.suspect_share,
            "expected_urgent_share": self.expected_urgent_share,
            "urgent_band": list(self.urgent_band) if self.urgent_band else None,
            "score_psi": self.score_psi,
            "score_ks": self.score_ks,
            "distance_psi": self.distance_psi,
            "distance_ks": self.distance_ks,
            "warnings": list(self.warnings),
        }

    def summary(self) -> str:
        """One line for ``status`` and the review page header."""
        if not self.cases:
            return f"drift ({self.days} d): no scored case yet"

        def fmt(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.2f}"

        # Below the counts the warnings need, a figure is noise: say that, not the figure
        # (PSI over 10 groups reads about 9 / n on a stream straight from the reference).
        low, high = self.urgent_band or (0.0, 1.0)
        band = (
            f"expected {low:.0%}-{high:.0%}"
            if self.cases >= MIN_CASES
            else f"collecting: {self.cases} of {MIN_CASES} cases"
        )
        shift = (
            f"score PSI {fmt(self.score_psi)} KS {fmt(self.score_ks)}; distance PSI "
            f"{fmt(self.distance_psi)} KS {fmt(self.distance_ks)}"
            if self.cases >= MIN_PSI_CASES
            else f"score and distance PSI/KS collecting ({self.cases} of {MIN_PSI_CASES} cases)"
        )
        return (
            f"drift ({self.days} d, {self.cases} cases vs {self.reference_source}): URGENT "
            f"{self.urgent_share:.0%} ({band}), SUSPECT {self.suspect_share:.0%}; {shift}; "
            f"not chest {self.not_chest}, outside population {self.outside_population}"
        )


def _histogram(bins: Mapping[tuple[str, int], int], measure: str, size: int) -> np.ndarray:
    counts = np.zeros(size)
    for (name, index), count in bins.items():
        if name == measure and 0 <= index < size:
            counts[index] += count
    return counts


def psi_and_ks(live: np.ndarray, reference_bins: np.ndarray) -> tuple[float, float] | None:
    """PSI over the reference's deciles and KS over the fine bins; None without data.

    ``live`` and ``reference_bins`` are counts over the same fine bins. Deciles are groups
    of consecutive fine bins holding about a tenth of the reference each; proportions are
    floored at 1e-4 so an empty bin does not give an infinite PSI.
    """
    if live.sum() == 0 or reference_bins.sum() == 0:
        return None
    live_p, ref_p = live / live.sum(), reference_bins / reference_bins.sum()
    ks = float(np.max(np.abs(np.cumsum(live_p) - np.cumsum(ref_p))))
    group = np.minimum((np.cumsum(ref_p) - ref_p / 2) * 10, 9.999).astype(int)
    live_g = np.bincount(group, live_p, minlength=10)
    ref_g = np.bincount(group, ref_p, minlength=10)
    live_g, ref_g = np.maximum(live_g, 1e-4), np.maximum(ref_g, 1e-4)
    psi = float(np.sum((live_g - ref_g) * np.log(live_g / ref_g)))
    return psi, ks


def urgent_band(expected: float, cases: int, coverage: float = BAND) -> tuple[float, float]:
    """Central ``coverage`` binomial interval of the URGENT share over ``cases`` cases."""
    tail = (1 - coverage) / 2
    low, high = binom.ppf([tail, 1 - tail], cases, expected)
    return float(low) / cases, float(high) / cases


def report(
    bins: Mapping[tuple[str, int], int], reference: Reference, first_day: date, days: int
) -> DriftReport:
    """Compare a window's counts (one model version) with ``reference``."""
    priorities = _histogram(bins, "priority", 3)
    cases = int(priorities.sum())
    content = _histogram(bins, "content", 4)
    score = psi_and_ks(
        _histogram(bins, "score", SCORE_BINS),
        np.bincount([score_bin(p) for p in reference.probabilities], minlength=SCORE_BINS),
    )
    distance = psi_and_ks(
        _histogram(bins, "distance", DISTANCE_BINS),
        np.bincount([distance_bin(d) for d in reference.distances], minlength=DISTANCE_BINS).astype(
            float
        ),
    )
    expected = reference.urgent_share
    warnings: list[str] = []
    band = urgent_band(expected, cases) if cases else None
    urgent = priorities[Priority.URGENT.rank] / cases if cases else None
    outside_band = band is not None and urgent is not None and not band[0] <= urgent <= band[1]
    if cases >= MIN_CASES and outside_band and band is not None:
        warnings.append(
            f"URGENT share {urgent:.0%} over {cases} cases is outside its expected band "
            f"{band[0]:.0%}-{band[1]:.0%} ({reference.source} reference "
            f"{expected:.0%}): re-validate the model on recent local cases"
        )
    if cases >= MIN_PSI_CASES:
        if score is not None and score[0] > PSI_WARNING:
            warnings.append(
                f"score distribution shifted (PSI {score[0]:.2f} > {PSI_WARNING}) over "
                f"{cases} cases: re-validate the model on recent local cases"
            )
        if distance is not None and distance[0] > PSI_WARNING:
            warnings.append(
                f"image appearance shifted (content-check distance PSI {distance[0]:.2f} > "
                f"{PSI_WARNING}) over {cases} cases: check the modality's export and "
                "processing, then re-validate"
            )
    return DriftReport(
        model_version=reference.model_version,
        reference_source=reference.source,
        first_day=first_day,
        days=days,
        cases=cases,
        not_chest=int(content[CONTENT_BINS[ContentVerdict.NOT_CHEST]]),
        outside_population=int(content[CONTENT_BINS[ContentVerdict.OUTSIDE_POPULATION]]),
        urgent_share=urgent,
        suspect_share=priorities[Priority.SUSPECT.rank] / cases if cases else None,
        expected_urgent_share=expected,
        urgent_band=band,
        score_psi=score[0] if score else None,
        score_ks=score[1] if score else None,
        distance_psi=distance[0] if distance else None,
        distance_ks=distance[1] if distance else None,
        warnings=tuple(warnings),
    )
