"""What the worker needs from a model: the interface ``model.predict.Classifier`` fulfils.

A Protocol rather than the class, so the pipeline and its tests can run with any scorer
and the module imports no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from model.prediction import Prediction


class Scorer(Protocol):
    @property
    def version(self) -> str: ...

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]: ...

    def heatmaps(self, images: Sequence[np.ndarray]) -> np.ndarray: ...

    def warm_up(self, batch_size: int) -> None: ...
