"""A scorer without TensorFlow, for fast tests of what the worker does around the model.

:class:`FakeScorer` has the interface of :class:`worker.scoring.Scorer` (the one
``model.predict.Classifier`` fulfils) and returns deterministic predictions, so the
pipeline's orchestration (batching, the per-image fallback, time limits, filing) is tested
in milliseconds. It is a stand-in for the model only: files, databases and the pipeline
itself stay real in the tests that use it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from model.prediction import Label, Prediction, Priority


class FakeModelError(RuntimeError):
    """What the fake model raises for a batch or an image it is told to fail on."""


#: What the fake model says of every image unless told otherwise: an urgent pneumonia.
URGENT = Prediction(0.87, Label.PNEUMONIA, Priority.URGENT, 0.5, "fake-1.0")


@dataclass
class FakeScorer:
    """Every image gets ``prediction``.

    ``fail_batches``: any call with more than one image raises :class:`FakeModelError`.
    ``fails_on``: an image for which it returns True makes its call raise, alone or not.
    ``raises``: every ``predict`` call raises this (a time limit, say).
    ``calls`` records the batch size of every ``predict`` call, in order.
    """

    prediction: Prediction = URGENT
    fail_batches: bool = False
    fails_on: Callable[[np.ndarray], bool] = lambda pixels: False
    raises: BaseException | None = None
    calls: list[int] = field(default_factory=list)

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        self.calls.append(len(images))
        if self.raises is not None:
            raise self.raises
        if self.fail_batches and len(images) > 1:
            raise FakeModelError(f"a batch of {len(images)} images")
        if any(self.fails_on(image) for image in images):
            raise FakeModelError("an image the fake model fails on")
        return [self.prediction for _ in images]

    @property
    def version(self) -> str:
        return self.prediction.model_version

    def heatmaps(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """A flat map per image, the shape Grad-CAM gives (N, H, W) of the first image."""
        if not images:
            return np.zeros((0, 1, 1), dtype=np.float32)
        height, width = images[0].shape[:2]
        return np.full((len(images), height, width), 0.5, dtype=np.float32)

    def warm_up(self, batch_size: int) -> None:
        """Nothing to trace."""
