"""A worklist row as it leaves the database: the one shape of the JSON API and of
``cxr-triage worklist --json`` / ``--csv``.

Both readers (``web`` and ``worker.cli``) sit above ``db``, so the schema lives here and
either may import it. The row shows accession numbers, patient IDs and file names: it is
for the reading room and integrations, never for a log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
from db.reading import ImageRole, ReadingEntry
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
    # Where the row stands in the reading list (db.reading), set when it is listed (None for
    # a row asked for alone): its entry's place (1 is read first; None when listed apart),
    # the entry's tier ("urgent", "suspect", "routine" or "apart"), the entry's leading row,
    # what this image is to its entry, and whether the entry's study UID or accession number
    # is also another patient's (kept apart, never merged: check the identity).
    position: int | None = None
    tier: str | None = None
    entry_id: int | None = None
    role: ImageRole | None = None
    identity_conflict: bool = False
    # Added for the review page (migration 0011), at the end again: from the header at
    # admission (PHI-grade, like patient_id; None for JPEG/PNG and rows admitted before),
    # and the SUSPECT cut-off the row was scored with (``threshold`` is the URGENT one).
    patient_age_years: float | None = None
    patient_sex: str | None = None
    view_position: str | None = None
    study_description: str | None = None
    suspect_threshold: float | None = None

    @classmethod
    def of(cls, entry: WorklistEntry, results: Sequence[ResultObject] = (), **more: object) -> Self:
        """The row of ``entry`` with its SR/SC (``results``: :func:`db.results.objects_of`);
        ``more``: the fields a subclass adds."""
        columns = WorklistRow.model_fields.keys() - {"flags", "results", "result_objects"}
        columns -= LISTING_FIELDS
        return cls.model_validate(
            {
                **{name: getattr(entry, name) for name in columns},
                "flags": list(entry.flag_list),
                "results": summary(results),
                "result_objects": [ResultObjectRow.model_validate(obj) for obj in results],
                **more,
            }
        )

    @classmethod
    def listed(
        cls, entry: ReadingEntry, results: Mapping[int, Sequence[ResultObject]]
    ) -> list[Self]:
        """The rows of ``entry``'s images, leading image first, each with its place."""
        return [
            cls.of(
                image,
                results.get(image.id, ()),
                position=entry.position,
                tier=entry.tier,
                entry_id=entry.leading.id,
                role=entry.role(image),
                identity_conflict=entry.identity_conflict,
            )
            for image in entry.images
        ]


#: The fields a row only has in a listing (:meth:`WorklistRow.listed`).
LISTING_FIELDS = frozenset({"position", "tier", "entry_id", "role", "identity_conflict"})


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
