"""The JSON API: the same worklist and review for integrations (RIS, dashboards, scripts).

A row is :class:`db.schema.WorklistRow`, the shape ``cxr-triage worklist --json`` prints
too, less the file name and the server path it was archived under (senders put patient
names in file names; an integration has no use for the server's folders), plus the row's
two addresses on the review page.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel, Field, computed_field, field_validator
from sqlalchemy.orm import Session

from db.models import ReviewDecision, WorklistEntry
from db.results import objects_of
from db.schema import ReviewRow, WorklistRow
from db.worklist import get_entry, review, review_history
from web import auth
from web.database import ReadSession, WriteSession
from web.params import MAX_NOTE, EntryId, Filters, check_note

router = APIRouter(prefix="/api")


class ApiRow(WorklistRow):
    """A worklist row with where the review page shows it, without its file names."""

    source_name: str = Field(exclude=True)
    archived_path: str | None = Field(exclude=True)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def image_url(self) -> str:
        return f"/worklist/{self.id}/image.png"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def page_url(self) -> str:
        return f"/worklist/{self.id}"


class ApiEntry(ApiRow):
    """One row with every review recorded on it, oldest first."""

    reviews: list[ReviewRow]


class ApiWorklist(BaseModel):
    """A page of the reading list (``rows``: each entry's images, leading image first, in
    reading order) and of the entries listed apart (``apart``: not the device's to read).
    ``offset`` and ``limit`` count entries of each list; ``total`` and ``apart_total`` how
    many each has."""

    rows: list[ApiRow]
    apart: list[ApiRow]
    total: int
    apart_total: int
    offset: int
    limit: int


class ReviewRequest(BaseModel):
    decision: ReviewDecision
    note: str | None = Field(default=None, max_length=MAX_NOTE)

    @field_validator("note")
    @classmethod
    def _printable(cls, note: str | None) -> str | None:
        return check_note(note or "")


@router.get("/worklist")
def worklist(
    filters: Annotated[Filters, Query()],
    reader: Annotated[auth.Person, Depends(auth.api_user)],
    session: ReadSession,
) -> ApiWorklist:
    """The reading list (db.reading): URGENT, then SUSPECT with every film not analysed,
    then ROUTINE, oldest first within a tier, one entry per study; and the list apart."""
    page = filters.page(session)
    results = objects_of(session, [image.id for image in page.images])
    return ApiWorklist(
        rows=[row for entry in page.entries for row in ApiRow.listed(entry, results)],
        apart=[row for entry in page.apart for row in ApiRow.listed(entry, results)],
        total=page.total,
        apart_total=page.apart_total,
        offset=filters.offset,
        limit=filters.limit,
    )


@router.get("/worklist/{entry_id}")
def entry(
    entry_id: EntryId,
    reader: Annotated[auth.Person, Depends(auth.api_user)],
    session: ReadSession,
) -> ApiEntry:
    """One row, with every review recorded on it (oldest first) under ``reviews``."""
    found = get_entry(session, entry_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"worklist row {entry_id} not found")
    return _with_reviews(session, found)


@router.post("/worklist/{entry_id}/review")
def review_entry(
    request: Request,
    entry_id: EntryId,
    body: ReviewRequest,
    reader: Annotated[auth.Person, Depends(auth.api_reviewer)],
    session: WriteSession,
) -> ApiEntry:
    """Record ``decision`` by the authenticated reviewer (the reviewer or admin role); the
    row stays on the worklist and keeps the latest decision, the history keeps every one."""
    try:
        reviewed = review(session, entry_id, body.decision, reader.name, note=body.note)
    except LookupError as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from error
    auth.audit_review(session, request, reader, entry_id, body.decision.value, "api")
    return _with_reviews(session, reviewed)


def _with_reviews(session: Session, found: WorklistEntry) -> ApiEntry:
    return ApiEntry.of(
        found,
        objects_of(session, [found.id]).get(found.id, []),
        reviews=ReviewRow.history(review_history(session, found.id)),
    )
