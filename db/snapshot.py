"""A worklist row carried out of its session: the one shape the worker passes around.

The pipeline reads a claimed row's file after its claim's session has closed; the intake
decides what a known row means for a file it holds; the lease keeper files the originals
of rows that became final. Each needs a handful of a row's values after the session that
loaded them is gone, and an ORM entity detached from its session is a trap (an expired
attribute then raises). :class:`RowSnapshot` copies those values once, at the edge of the
session, into a frozen value that is safe anywhere: threads, callbacks, log lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from db.models import FINAL_STATUSES, Status, WorklistEntry


@dataclass(frozen=True)
class RowSnapshot:
    """The values of a worklist row that the worker reads after its session closed."""

    id: int
    status: Status
    file_sha256: str
    source_name: str  # path relative to the inbox (may carry PHI: never logged)
    source_path: str  # absolute path while the file was in the inbox
    archived_path: str | None  # where the original goes, once the row is final
    reason: str | None
    reason_detail: str | None
    received_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0  # claims of the row, the current one included

    @classmethod
    def of(cls, entry: WorklistEntry) -> RowSnapshot:
        """Copy ``entry``'s values; call it while its session is still open."""
        return cls(
            id=entry.id,
            status=Status(entry.status),
            file_sha256=entry.file_sha256,
            source_name=entry.source_name,
            source_path=entry.source_path,
            archived_path=entry.archived_path,
            reason=entry.reason,
            reason_detail=entry.reason_detail,
            received_at=entry.received_at,
            started_at=entry.started_at,
            finished_at=entry.finished_at,
            attempts=entry.attempts,
        )

    @property
    def source(self) -> Path:
        """Where the file lay in the inbox when it was admitted."""
        return Path(self.source_path)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES
