"""Rows put straight into a final state, for tests that need a scored or unscored worklist.

Production stores final values only through :func:`db.worklist.record_final`, guarded by the
task's claim token; these write the same columns (:func:`db.worklist.scored_columns`,
:func:`db.worklist.unscored_columns`) onto a row the test holds, without a claim.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from db.models import Status, WorklistEntry, utcnow
from db.worklist import ScoreValues, scored_columns, unscored_columns


def record_scored(
    session: Session, entry: WorklistEntry, scored: ScoreValues, archived_path: str
) -> None:
    """``entry`` done with the model's result ``scored``, its original at ``archived_path``."""
    _assign(entry, scored_columns(scored, archived_path, utcnow()))


def record_unscored(
    session: Session,
    entry: WorklistEntry,
    status: Status,
    reason: str,
    detail: str,
    archived_path: str,
) -> None:
    """``entry`` rejected (bad input) or failed (our error); both end in quarantine."""
    if status not in (Status.REJECTED, Status.FAILED):
        raise ValueError(f"unscored status must be rejected or failed, got {status}")
    _assign(entry, unscored_columns(status, reason, detail, archived_path, utcnow()))


def _assign(entry: WorklistEntry, columns: dict[str, object]) -> None:
    for name, value in columns.items():
        setattr(entry, name, value)
