"""What the model says about one image: a calibrated probability, a label and a priority."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from model.content_check import ContentVerdict


class Label(StrEnum):
    NORMAL = "normal"
    PNEUMONIA = "pneumonia"


class Priority(StrEnum):
    """Reading priority on the worklist. ``rank`` orders it: 0 is read first.

    ``urgent``: at or above the operating threshold, labelled pneumonia (the threshold
    catches 95 % of the validation pneumonias); ``suspect``: below it but above a second,
    more sensitive cut-off (99 % on validation), the borderline cases; ``routine``: the
    rest. Both cut-offs live in the model card. No case is ever removed from the queue.
    """

    URGENT = "urgent"
    SUSPECT = "suspect"
    ROUTINE = "routine"

    @property
    def rank(self) -> int:
        return _RANKS[self]


_RANKS = {Priority.URGENT: 0, Priority.SUSPECT: 1, Priority.ROUTINE: 2}


@dataclass(frozen=True)
class Prediction:
    probability: float  # calibrated P(pneumonia)
    label: Label
    priority: Priority
    threshold: float  # the operating threshold the label was decided with
    model_version: str
    #: The content check (:mod:`model.content_check`); None when the model has none fitted.
    content: ContentVerdict | None = None
    content_distance: float | None = None
    #: The card's SUSPECT cut-off the priority was decided with (None where not known).
    suspect_threshold: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {self.probability}")
