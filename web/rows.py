"""Worklist rows as the page and the API present them, and the filters both accept."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from db.models import ResultObject, ReviewDecision, Status, WorklistEntry
from db.results import summary
from db.worklist import parse_when, reading_order

MAX_LIMIT = 500


class FilterError(ValueError):
    """A filter value the page cannot use; the message names it."""


@dataclass(frozen=True)
class Filters:
    """What the reader narrowed the worklist to. Empty strings mean "any"."""

    status: str = ""
    reviewed: str = "no"  # "no": still to read (default) | "all"
    patient_id: str = ""
    accession_number: str = ""
    since: str = ""  # "24h", "7d" or an ISO date/time (UTC unless zoned)
    limit: int = 100

    def __post_init__(self) -> None:
        if self.status and self.status not in {s.value for s in Status}:
            raise FilterError(f"unknown status {self.status!r}")
        if self.reviewed not in ("no", "all"):
            raise FilterError("reviewed must be 'no' or 'all'")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise FilterError(f"limit must be between 1 and {MAX_LIMIT}")
        self.since_time()  # validates

    def since_time(self) -> datetime | None:
        if not self.since.strip():
            return None
        try:
            return parse_when(self.since)
        except ValueError as error:
            raise FilterError(f"since: {error}") from error

    def rows(self, session: Session) -> Sequence[WorklistEntry]:
        """The rows in reading order (``db.worklist.reading_order`` does the ordering)."""
        return reading_order(
            session,
            statuses=[Status(self.status)] if self.status else None,
            since=self.since_time(),
            patient_id=self.patient_id.strip() or None,
            accession_number=self.accession_number.strip() or None,
            include_reviewed=self.reviewed == "all",
            limit=self.limit,
        )


def next_to_read(session: Session, after_id: int) -> WorklistEntry | None:
    """The first unreviewed row in reading order other than ``after_id``."""
    for entry in reading_order(session, limit=2):
        if entry.id != after_id:
            return entry
    return None


def as_json(entry: WorklistEntry, results: Sequence[ResultObject] = ()) -> dict[str, Any]:
    """The API's view of a row (the reading room sees accession and patient ID; logs don't),
    with its SR/SC on their way to the PACS (``results``: :func:`db.results.objects_of`)."""
    return {
        "id": entry.id,
        "status": _value(entry.status),
        "priority": entry.priority,
        "priority_rank": entry.priority_rank,
        "probability": entry.probability,
        "label": entry.label,
        "threshold": entry.threshold,
        "model_version": entry.model_version,
        "flags": list(entry.flag_list),
        "reason": entry.reason,
        "reason_detail": entry.reason_detail,
        "source_kind": entry.source_kind,
        "accession_number": entry.accession_number,
        "patient_id": entry.patient_id,
        "study_instance_uid": entry.study_instance_uid,
        "sop_instance_uid": entry.sop_instance_uid,
        "received_at": _time(entry.received_at),
        "finished_at": _time(entry.finished_at),
        "reviewed_at": _time(entry.reviewed_at),
        "reviewed_by": entry.reviewed_by,
        "review_decision": _value(entry.review_decision),
        "results": summary(results),
        "result_objects": [result_json(obj) for obj in results],
        "image_url": f"/worklist/{entry.id}/image.png",
        "page_url": f"/worklist/{entry.id}",
    }


def result_json(obj: ResultObject) -> dict[str, Any]:
    """One SR or SC: its state (pending, stored, failed), why, and how many attempts."""
    return {
        "kind": obj.kind.value,
        "state": obj.state.value,
        "reason": obj.reason,
        "attempts": obj.attempts,
        "last_error": obj.last_error,
        "sop_instance_uid": obj.sop_instance_uid,
        "updated_at": _time(obj.updated_at),
        "stored_at": _time(obj.stored_at),
    }


def _value(value: Status | ReviewDecision | str | None) -> str | None:
    return value.value if isinstance(value, Status | ReviewDecision) else value


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
