"""The JSON API: the same worklist and review for integrations (RIS, dashboards, scripts)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel, Field, field_validator

from db.models import ReviewDecision
from db.results import objects_of
from db.worklist import get_entry, review, review_history
from web import auth
from web.rows import MAX_NOTE, EntryId, FilterError, Filters, as_json, check_note, history_json

router = APIRouter(prefix="/api")


class ReviewRequest(BaseModel):
    decision: ReviewDecision
    note: str | None = Field(default=None, max_length=MAX_NOTE)

    @field_validator("note")
    @classmethod
    def _printable(cls, note: str | None) -> str | None:
        return check_note(note or "")


@router.get("/worklist")
def worklist(
    request: Request,
    reader: Annotated[str, Depends(auth.api_user)],
    status_: Annotated[str, Query(alias="status")] = "",
    reviewed: str = "no",
    patient_id: str = "",
    accession_number: str = "",
    since: str = "",
    limit: int = 100,
) -> dict[str, Any]:
    """Rows in reading order: priority rank, then probability (high first), then arrival."""
    try:
        filters = Filters(status_, reviewed, patient_id, accession_number, since, limit)
    except FilterError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from error
    with request.app.state.sessions() as session:
        rows = filters.rows(session)
        results = objects_of(session, [entry.id for entry in rows])
        return {"rows": [as_json(entry, results.get(entry.id, [])) for entry in rows]}


@router.get("/worklist/{entry_id}")
def entry(
    request: Request, entry_id: EntryId, reader: Annotated[str, Depends(auth.api_user)]
) -> dict[str, Any]:
    """One row, with every review recorded on it (oldest first) under ``reviews``."""
    with request.app.state.sessions() as session:
        found = get_entry(session, entry_id)
        if found is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"worklist row {entry_id} not found")
        return as_json(found, objects_of(session, [entry_id]).get(entry_id, [])) | history_json(
            review_history(session, entry_id)
        )


@router.post("/worklist/{entry_id}/review")
def review_entry(
    request: Request,
    entry_id: EntryId,
    body: ReviewRequest,
    reader: Annotated[str, Depends(auth.api_write_user)],
) -> dict[str, Any]:
    """Record ``decision`` by the authenticated reader; the row stays on the worklist and
    keeps the latest decision, the history keeps every one."""
    with request.app.state.sessions.begin() as session:
        try:
            reviewed = review(session, entry_id, body.decision, reader, note=body.note)
        except LookupError as error:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from error
        return as_json(reviewed, objects_of(session, [entry_id]).get(entry_id, [])) | history_json(
            review_history(session, entry_id)
        )
