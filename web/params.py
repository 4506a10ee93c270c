"""What a request names, checked before it reaches the database: a row id, the worklist
filters (one model for the page and the API) and a reader's note."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Literal

from fastapi import Path, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from sqlalchemy.orm import Session

from db.models import Status, WorklistEntry
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


class Filters(BaseModel):
    """What the reader narrowed the worklist to: the query string of ``/worklist`` and
    ``/api/worklist`` alike. Empty strings mean "any"."""

    model_config = ConfigDict(frozen=True)

    status: str = ""
    reviewed: Literal["no", "all"] = "no"  # "no": still to read | "all": reviewed too
    patient_id: str = ""
    accession_number: str = ""
    since: str = ""  # "24h", "7d" or an ISO date/time (UTC unless zoned)
    limit: int = Field(default=100, ge=1, le=MAX_LIMIT)

    @field_validator("status")
    @classmethod
    def _known_status(cls, value: str) -> str:
        if value and value not in {s.value for s in Status}:
            raise ValueError(f"unknown status {value!r}")
        return value

    @field_validator("patient_id", "accession_number", "since")
    @classmethod
    def _no_nul(cls, value: str, info: ValidationInfo) -> str:
        if "\x00" in value:  # PostgreSQL text cannot hold NUL: a 500 else
            raise ValueError(f"{info.field_name} may not contain a NUL character")
        return value

    @field_validator("since")
    @classmethod
    def _a_time(cls, value: str) -> str:
        if value.strip():
            parse_when(value)  # its ValueError names the value
        return value

    def since_time(self) -> datetime | None:
        return parse_when(self.since) if self.since.strip() else None

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


def page_filters(request: Request) -> tuple[Filters, str]:
    """The page's filters and what was wrong with them: an unusable value is named above the
    default list instead of answering 422, as the API does."""
    try:
        return Filters.model_validate(dict(request.query_params)), ""
    except ValidationError as error:
        first = error.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        return Filters(), f"{first['loc'][0]}: {message}" if first["loc"] else message
