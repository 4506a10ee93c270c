"""How the review page says a row's facts: probabilities honest at the ends, the cut-offs
they were judged by, ages, waiting times, and why a row has no score, in words.

Pure functions (the templates' filters and the pages' helpers), so every wording is tested
once and reads the same on the worklist, the case page and the live refresh.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from db.models import Status, WorklistEntry
from db.reading_rule import APART
from ingest.errors import reason_in_words
from model.card import ModelCard

#: Below and above these, a probability is said as "<1 %" / ">99 %": a calibrated model
#: does not know a child's risk to the percent at the ends, and "100 %" reads as certainty.
LOW_END, HIGH_END = 0.01, 0.99


def probability_text(probability: float | None, cutoffs: Iterable[float | None] = ()) -> str:
    """``probability`` as a whole percent, "<1 %" or ">99 %" at the ends.

    Near a cut-off (closer than the rounding), one more digit is shown, and another if that
    is still not enough, so that a SUSPECT 6.7 % and a ROUTINE 6.5 % never both read "7 %"
    beside a stated cut-off of 6.6 %: precision only where the decision needs it.
    """
    if probability is None:
        return ""
    digits = 0
    for cutoff in cutoffs:
        if cutoff is None:
            continue
        distance = abs(probability - cutoff)
        if distance < 0.005:
            digits = max(digits, 1 if distance >= 0.0005 else 2)
    if digits == 0 and probability < LOW_END:
        return "<1 %"
    if digits == 0 and probability > HIGH_END:
        return ">99 %"
    return f"{probability * 100:.{digits}f} %"


def cutoff_text(cutoff: float) -> str:
    """A cut-off as stated on the page: one decimal below 10 %, else a whole percent."""
    percent = cutoff * 100
    if percent < 10 and round(percent, 1) != round(percent):
        return f"{percent:.1f} %"
    return f"{percent:.0f} %"


def age_text(years: float | None) -> str:
    """A child's age as a pediatric reader says it: days, months under 2 years, then years."""
    if years is None or years < 0:
        return ""
    days = years * 365.25
    if days < 31:
        return f"{round(days)} d"
    if years < 2:
        return f"{int(days // (365.25 / 12))} mo"
    return f"{int(years)} y"


SEX_WORDS = {"M": "male", "F": "female", "O": "other"}


def waiting_text(received_at: datetime | None, now: datetime) -> str:
    """How long a case has waited since it arrived: "45 s", "12 min", "3 h 05 min", "2 d 4 h"."""
    if received_at is None:
        return ""
    seconds = max(0, int((now - received_at).total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


#: What each tier means for the reader, said beside its badge.
TIER_WORDS = {
    "urgent": "pneumonia suspected: at or above the URGENT cut-off",
    "suspect": "borderline: below the URGENT cut-off, at or above the SUSPECT cut-off",
    "routine": "below both cut-offs",
    APART: "not the device's to read",
}


def badge(row: WorklistEntry, tier: str) -> str:
    """The one word on a row's badge: its own priority, or why it has none."""
    if row.priority:
        return row.priority
    if row.status in (Status.QUEUED, Status.PROCESSING):
        return "in progress"
    if row.reading_tier is None:
        return "not for device" if tier == APART else "by design"
    return "not analysed"


def why_unscored(row: WorklistEntry) -> str:
    """Why ``row`` has no probability, in words (empty for a scored row)."""
    if row.status is Status.DONE:
        return ""
    if row.status is Status.QUEUED:
        return "Waiting to be scored: read with SUSPECT until then (not yet known is not low risk)."
    if row.status is Status.PROCESSING and row.claimed_by is None:  # held for a retry
        return "Waiting for the share or the model to come back: read with SUSPECT until then."
    if row.status is Status.PROCESSING:
        return "Being scored now: read with SUSPECT until then."
    return reason_in_words(row.reason)


@dataclass(frozen=True)
class Cutoffs:
    """The two cut-offs a model version scored with (``suspect`` None when not recorded)."""

    model_version: str
    urgent: float
    suspect: float | None

    def sentence(self) -> str:
        suspect = (
            f"SUSPECT at {cutoff_text(self.suspect)} or more"
            if self.suspect is not None
            else "SUSPECT cut-off not recorded for these rows"
        )
        return (
            f"Model {self.model_version}: URGENT at P ≥ {cutoff_text(self.urgent)}; "
            f"{suspect}; ROUTINE below."
        )


def row_cutoffs(row: WorklistEntry, card: ModelCard | None) -> Cutoffs | None:
    """The cut-offs ``row`` was scored with: stored on it (migration 0011), else the loaded
    model card's SUSPECT cut-off when the row names the same model version (rows scored
    before the column existed), else only the URGENT one, which every scored row stores."""
    if row.threshold is None or row.model_version is None:
        return None
    suspect = row.suspect_threshold
    if suspect is None and card is not None and card.model_version == row.model_version:
        point = card.operating_point
        if abs(point.threshold - row.threshold) < 1e-9:  # the same calibration, not a re-fit
            suspect = point.suspect_threshold
    return Cutoffs(row.model_version, row.threshold, suspect)


def page_cutoffs(rows: Iterable[WorklistEntry], card: ModelCard | None) -> list[Cutoffs]:
    """The distinct cut-offs of the scored rows shown (usually one model); the loaded card's
    when no row shown is scored, so the page always states what the tiers mean."""
    found: dict[tuple[str, float, float | None], Cutoffs] = {}
    for row in rows:
        cutoffs = row_cutoffs(row, card)
        if cutoffs is not None:
            found.setdefault((cutoffs.model_version, cutoffs.urgent, cutoffs.suspect), cutoffs)
    if not found and card is not None:
        point = card.operating_point
        return [Cutoffs(card.model_version, point.threshold, point.suspect_threshold)]
    return sorted(found.values(), key=lambda c: (c.model_version, c.urgent))


#: The row flags (ingest/eligibility.py, worker/population.py) in a reader's words; the
#: code itself stays on the element (``data-flag``) for whoever traces it.
FLAG_WORDS = {
    "age_outside_training_range": "age outside 1-5 years",
    "adult_by_header_age": "adult by header age",
    "age_unknown": "age not stated",
    "eligibility_unverified": "no header: eligibility unverified",
    "missing_view_position": "view not stated",
    "missing_body_part": "body part not stated",
    "color_converted": "converted from colour",
    "outside_training_population": "outside the training population",
    "content_unchecked": "content check not run",
}
