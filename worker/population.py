"""What the content check's verdict and the header's age mean for a worklist row.

- ``not_chest_radiograph``: the pixels are not a frontal chest radiograph (the content
  check's refusal): the row is ``rejected``, never scored, and the file quarantined with
  its reason. Whatever the header says: a CT slice in a chest header is not a chest film.
- ``outside_training_population``, not analysed: a chest radiograph of an adult by the
  header's age (``adult_by_header_age``, from :mod:`ingest.eligibility`). The model learnt
  from children aged 1-5; an adult's film sits inside the children's far tail of the
  content check (it cannot be told from them by the pixels) and its probability has never
  been measured against anything, so the row is ``rejected`` with this reason rather than
  given a priority nobody can vouch for. The reading order treats it as unknown risk, not
  low risk.
- ``outside_training_population``, scored and flagged: a child outside 1-5 years by the
  header (``age_outside_training_range``), or an image the content check finds unusual but
  not refused. The reader is told the probability comes from outside the population.

No TensorFlow here: the pipeline's tests drive it with any scorer.
"""

from __future__ import annotations

from dataclasses import dataclass

from ingest.eligibility import ADULT_BY_HEADER_AGE, AGE_OUTSIDE_TRAINING_RANGE
from ingest.errors import Reason
from model.content_check import ContentVerdict
from model.prediction import Prediction

OUTSIDE_TRAINING_POPULATION = ContentVerdict.OUTSIDE_POPULATION.value
#: Set when the model has no content check fitted: the reader is told the image was not checked.
CONTENT_UNCHECKED = "content_unchecked"


@dataclass(frozen=True)
class NotAnalysed:
    """Why a read image is not scored, and the sentence stored with the rejection."""

    reason: Reason
    detail: str


def not_analysed(prediction: Prediction | None, flags: tuple[str, ...]) -> NotAnalysed | None:
    """The rejection of an image the model read, or None to score it.

    ``flags`` are the file's eligibility flags. The pixels are judged first, so a reason
    never calls something a chest radiograph that the content check refused.
    """
    if prediction is not None and prediction.content is ContentVerdict.NOT_CHEST:
        return NotAnalysed(
            Reason.NOT_CHEST_RADIOGRAPH,
            "The pixels do not look like a frontal chest radiograph (content-check distance "
            f"{prediction.content_distance:.1f}); not scored.",
        )
    if ADULT_BY_HEADER_AGE in flags:
        return NotAnalysed(
            Reason.OUTSIDE_TRAINING_POPULATION,
            "A chest radiograph of an adult by the header's age; the model was trained on "
            "children aged 1-5 and has not been shown to read adults' films; not scored.",
        )
    return None


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
