"""A worklist row as it leaves the database: the one shape of the JSON API and of
``cxr-triage worklist --json`` / ``--csv``.

Both readers (``web`` and ``worker.cli``) sit above ``db``, so the schema lives here and
either may import it. The row shows accession numbers, patient IDs and file names: it is
for the reading room and integrations, never for a log.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, PlainSerializer

from db.models import (
    ResultKind,
    ResultObject,
    ResultState,
    ReviewDecision,
    ReviewRecord,
    Status,
    WorklistEntry,
)
from db.results import summary

#: Times as ``datetime.isoformat()`` writes them (``+00:00``, as before the schema existed;
#: pydantic alone would write ``Z``).
Time = Annotated[datetime, PlainSerializer(datetime.isoformat, return_type=str)]


class ResultObjectRow(BaseModel):
    """One SR or SC on its way to the PACS: its state, why, and how many attempts."""

    model_config = ConfigDict(frozen=True, from_attributes=True)

    kind: ResultKind
    state: ResultState
    reason: str | None
    attempts: int
    last_error: str | None
    sop_instance_uid: str | None
    updated_at: Time | None
    stored_at: Time | None


class WorklistRow(BaseModel):
    """Every column a reader or an integration may use, in the order ``--csv`` writes them.

    ``flags`` is a list here and in JSON; ``--csv`` joins it with commas. ``results`` is the
    one-phrase summary of ``result_objects`` (:func:`db.results.summary`).
    """

    model_config = ConfigDict(frozen=True)

    id: int
    status: Status
    priority: str | None
    priority_rank: int | None
    probability: float | None
    label: str | None
    flags: list[str]
    reason: str | None
    model_version: str | None
    threshold: float | None
    accession_number: str | None
    patient_id: str | None
    study_instance_uid: str | None
    sop_instance_uid: str | None
    source_name: str
    archived_path: str | None
    received_at: Time
    started_at: Time | None
    finished_at: Time | None
    reviewed_at: Time | None
    reviewed_by: str | None
    review_decision: ReviewDecision | None
    file_sha256: str
    results: str
    # Added after the CSV's first release: at the end, so readers by position keep working.
    reason_detail: str | None
    source_kind: str | None
    result_objects: list[ResultObjectRow]

    @classmethod
    def of(cls, entry: WorklistEntry, results: Sequence[ResultObject] = (), **more: object) -> Self:
        """The row of ``entry`` with its SR/SC (``results``: :func:`db.results.objects_of`);
        ``more``: the fields a subclass adds."""
        columns = WorklistRow.model_fields.keys() - {"flags", "results", "result_objects"}
        return cls.model_validate(
            {
                **{name: getattr(entry, name) for name in columns},
                "flags": list(entry.flag_list),
                "results": summary(results),
                "result_objects": [ResultObjectRow.model_validate(obj) for obj in results],
                **more,
            }
        )


class ReviewRow(BaseModel):
    """One decision in a row's review history."""

    model_config = ConfigDict(frozen=True, from_attributes=True)

    decision: ReviewDecision
    reviewed_by: str
    reviewed_at: Time
    note: str | None

    @classmethod
    def history(cls, records: Sequence[ReviewRecord]) -> list[ReviewRow]:
        return [cls.model_validate(record) for record in records]
