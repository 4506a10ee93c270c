"""What the content check's verdict means for a worklist row.

- ``not_chest_radiograph``: the row is ``rejected`` (never scored; it stays on the worklist,
  last, like every unscored row, and the file is quarantined with its reason);
- ``outside_training_population``: scored, and flagged so the reader knows the probability
  comes from outside the children aged 1-5 the model learnt from. A header age outside that
  range (``age_outside_training_range``, from :mod:`ingest.eligibility`) sets the same flag:
  an adult is outside the population whatever the features say.

No TensorFlow here: the pipeline's tests drive it with any scorer.
"""

from __future__ import annotations

from ingest.eligibility import AGE_OUTSIDE_TRAINING_RANGE
from model.content_check import ContentVerdict
from model.prediction import Prediction

OUTSIDE_TRAINING_POPULATION = ContentVerdict.OUTSIDE_POPULATION.value
#: Set when the model has no content check fitted: the reader is told the image was not checked.
CONTENT_UNCHECKED = "content_unchecked"


def content_rejection(prediction: Prediction | None) -> str | None:
    """The sentence stored with a ``not_chest_radiograph`` rejection, or None to keep it."""
    if prediction is None or prediction.content is not ContentVerdict.NOT_CHEST:
        return None
    return (
        "The pixels do not look like a frontal chest radiograph of the model's training "
        f"population (content-check distance {prediction.content_distance:.1f}); not scored."
    )


def population_flags(prediction: Prediction, flags: tuple[str, ...]) -> tuple[str, ...]:
    """``flags`` plus ``outside_training_population`` (or ``content_unchecked``) when due."""
    extra: list[str] = []
    if prediction.content is None:
        extra.append(CONTENT_UNCHECKED)
    if (
        prediction.content is ContentVerdict.OUTSIDE_POPULATION
        or AGE_OUTSIDE_TRAINING_RANGE in flags
    ):
        extra.append(OUTSIDE_TRAINING_POPULATION)
    return flags + tuple(flag for flag in extra if flag not in flags)
