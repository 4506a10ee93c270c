"""Does the framing of a film move the call? The crop-invariance check.

A normal chest does not become pneumonia because the film is collimated tighter. This
trims the top and bottom of each image to a wider aspect (:func:`model.geometry.crop_to_aspect`)
and reports, per aspect, how often normals are called pneumonia and how many pneumonias
are still caught, next to the uncropped images. Images whose true aspect is unknown (the
training set's 224 x 224 squashed copies) must be left out by the caller: trimming a
square that was once a wide film says nothing about framing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model.geometry import crop_to_aspect
from model.predict import Classifier

DEFAULT_ASPECTS = (1.3, 1.5, 1.8)


@dataclass(frozen=True)
class CropRow:
    aspect: float | None  # None: uncropped
    normals_called_pneumonia: float
    sensitivity: float
    median_normal_probability: float


def crop_invariance(
    classifier: Classifier,
    images: Sequence[np.ndarray],
    labels: np.ndarray,
    aspects: Sequence[float] = DEFAULT_ASPECTS,
    batch: int = 32,
) -> list[CropRow]:
    """One row for the uncropped images, then one per aspect, at the card's threshold."""
    threshold = classifier.card.operating_point.threshold
    table = []
    for aspect in (None, *aspects):
        views = [image if aspect is None else crop_to_aspect(image, aspect) for image in images]
        p = np.concatenate(
            [classifier.probabilities(views[i : i + batch]) for i in range(0, len(views), batch)]
        )
        called = p >= threshold
        table.append(
            CropRow(
                aspect=aspect,
                normals_called_pneumonia=float(called[labels == 0].mean()),
                sensitivity=float(called[labels == 1].mean()),
                median_normal_probability=float(np.median(p[labels == 0])),
            )
        )
    return table
