"""What a request names, checked before it reaches the database: a row id, the worklist
filters (one model for the page and the API) and a reader's note."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Annotated, Literal

from fastapi import Path, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from sqlalchemy.orm import Session

from db.models import Status
from db.reading import ReadingPage, Scope, reading_list
from db.reading_rule import APART, Tier
from db.worklist import parse_when
from web.live import tier_counts

MAX_LIMIT = 500
#: Paging deeper than this is refused (422): no worklist holds ten million entries, and a
#: bigger OFFSET only makes the database walk further.
MAX_OFFSET = 10_000_000
#: Row ids are BIGINT: anything outside 1..2^63-1 is refused (422) before it reaches the
#: database, which would otherwise fail the request with a 500.
MAX_ID = 2**63 - 1
EntryId = Annotated[int, Path(ge=1, le=MAX_ID, description="Worklist row id")]
MAX_NOTE = 2000  # characters of a reader's note on a review


def check_note(note: str) -> str | None:
    """A reader's note as stored: stripped, ``None`` when empty. Control characters other
    than newline and tab are refused (PostgreSQL cannot store NUL; the rest hide text), and
    so are lone surrogates (``"\\ud800"`` in JSON: no database can store them; issue 20)."""
    if any((ord(c) < 32 and c not in "\n\t\r") or ord(c) == 127 for c in note):
        raise ValueError("the note may not contain control characters")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in note):
        raise ValueError("the note may not contain lone surrogates (not valid Unicode text)")
    return note.strip() or None


class Filters(BaseModel):
    """What the reader narrowed the worklist to: the query string of ``/worklist`` and
    ``/api/worklist`` alike. Empty strings mean "any"."""

    model_config = ConfigDict(frozen=True)

    status: str = ""
    reviewed: Literal["no", "all"] = "no"  # "no": still to read | "all": reviewed too
    #: Entries of one tier of the reading list ("apart": the list apart only); "" all.
    tier: Literal["", "urgent", "suspect", "routine", "apart"] = ""
    patient_id: str = ""
    accession_number: str = ""
    since: str = ""  # "24h", "7d" or an ISO date/time (UTC unless zoned)
    limit: int = Field(default=100, ge=1, le=MAX_LIMIT)  # entries (studies) of each list
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)  # entries of each list skipped

    @field_validator("limit", mode="before")
    @classmethod
    def _at_most_a_page(cls, value: object) -> object:
        """A limit above :data:`MAX_LIMIT` pages instead of failing: it becomes the most a
        page holds (the answer's ``limit`` says so; the page says it in words)."""
        try:
            number = int(str(value))
        except ValueError:
            return value  # the field's own error names it
        return MAX_LIMIT if number > MAX_LIMIT else value

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

    def scope(self) -> Scope:
        return Scope.of(
            statuses=[Status(self.status)] if self.status else None,
            since=self.since_time(),
            patient_id=self.patient_id.strip() or None,
            accession_number=self.accession_number.strip() or None,
            include_reviewed=self.reviewed == "all",
        )

    def page(self, session: Session) -> ReadingPage:
        """This page of the reading list and of the list apart (``db.reading`` orders)."""
        return self.listing(session)[0]

    def listing(
        self, session: Session, counts: dict[str, int] | None = None
    ) -> tuple[ReadingPage, dict[str, int]]:
        """This page (of one tier when ``tier`` is set), and the entries per tier in scope.

        A tier is a stretch of the reading list (tiers come in order), so its page is the
        list's own page at the tier's start plus ``offset``: positions stay the reading
        list's, and nothing is re-ordered. ``total`` and ``apart_total`` count this view;
        the list apart is its own view (``tier="apart"``), paged on its own.
        """
        scope = self.scope()
        if counts is None:  # ``counts``: the caller's, of this scope (web/live.py shares them)
            counts = tier_counts(session, scope)
        reading_total = sum(counts[tier.label] for tier in Tier)
        if not self.tier:
            page = reading_list(session, scope, offset=self.offset, limit=self.limit, count=False)
            return replace(page, total=reading_total, apart_total=counts[APART]), counts
        if self.tier == APART:
            page = reading_list(session, scope, offset=self.offset, limit=self.limit, count=False)
            return ReadingPage([], 0, page.apart, counts[APART], self.offset, self.limit), counts
        chosen = Tier[self.tier.upper()]
        start = sum(counts[tier.label] for tier in Tier if tier < chosen)
        size = counts[chosen.label]
        take = max(0, min(self.limit, size - self.offset))
        entries = []
        if take:
            found = reading_list(
                session, scope, offset=start + self.offset, limit=take, count=False
            )
            # rows that arrived between the count and the page may shift a tier's edges
            entries = [entry for entry in found.entries if entry.tier == chosen.label]
        return ReadingPage(entries, size, [], 0, self.offset, self.limit), counts


def page_filters(request: Request) -> tuple[Filters, str]:
    """The page's filters and what was wrong with them: an unusable value is named above the
    default list instead of answering 422, as the API does."""
    try:
        return Filters.model_validate(dict(request.query_params)), ""
    except ValidationError as error:
        first = error.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        return Filters(), f"{first['loc'][0]}: {message}" if first["loc"] else message
