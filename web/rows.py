"""Worklist rows as the page and the API present them, and the filters both accept."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import Path
from sqlalchemy.orm import Session

from db.models import ResultObject, ReviewDecision, ReviewRecord, Status, WorklistEntry
from db.results import summary
from db.worklist import parse_when, reading_order

MAX_LIMIT = 500
#: Row ids are BIGINT: anything outside 1..2^63-1 is refused (422) before it reaches the
#: database, which would otherwise fail the request with a 500.
MAX_ID = 2**63 - 1
EntryId = Annotated[int, Path(ge=1, le=MAX_ID, description="Worklist row id")]
MAX_NOTE = 2000  # characters of a reader's note on a review


def check_note(note: str) -> str | None:
    """A reader's note as stored: stripped, ``None`` when empty. Control characters other
    than newline and tab are refused (PostgreSQL cannot store NUL; the rest hide text)."""
    if any((ord(c) < 32 and c not in "\n\t\r") or ord(c) == 127 for c in note):
        raise ValueError("the note may not contain control characters")
    return note.strip() or None


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
        for name in ("patient_id", "accession_number", "since"):
            if "\x00" in getattr(self, name):  # PostgreSQL text cannot hold NUL: a 500 else
                raise FilterError(f"{name} may not contain a NUL character")
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


def history_json(records: Sequence[ReviewRecord]) -> dict[str, Any]:
    """The ``reviews`` of one row, oldest first: every decision ever recorded on it."""
    return {
        "reviews": [
            {
                "decision": _value(record.decision),
                "reviewed_by": record.reviewed_by,
                "reviewed_at": _time(record.reviewed_at),
                "note": record.note,
            }
            for record in records
        ]
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
