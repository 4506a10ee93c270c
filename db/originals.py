"""Filing a row's original, with the row kept truthful about where it went.

Three places file an original after its row's final values are stored: the task that
scored it (:mod:`worker.pipeline`), the lease keeper finishing a move a crash interrupted
(:mod:`worker.lease_keeper`), and the intake when the watcher hands the original of a final
row again (:mod:`worker.intake`). They share one rule, written here once: the file goes to
the destination stored in the row (the archive for ``done``, ``quarantine/<reason>/`` with
a sidecar otherwise); :mod:`ingest.filing` never overwrites, so when that name is taken the
file lands on a free sibling, and the row's ``archived_path`` is set to where it really lies.

The move comes first and the row follows in a transaction of its own (only when the name
changed): a crash between the two leaves a file on a ``-N`` name that nothing points to, never
a row pointing at nothing that the original could be confused with.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from db.models import Status
from db.snapshot import RowSnapshot
from db.worklist import get_entry
from ingest.errors import Reason
from ingest.filing import Sidecar, move_into_place, quarantine_file


def file_original(
    sessions: sessionmaker[Session],
    entry_id: int,
    original: Path,
    destination: Path,
    sidecar: Sidecar | None,
) -> Path:
    """Move ``original`` to ``destination`` (with ``sidecar`` beside it when quarantined;
    None: the archive), and make row ``entry_id``'s ``archived_path`` name the file's final
    place if that is not ``destination``. Returns where the file now lies.

    Raises what the move raises (:class:`ingest.filing.FilingError` and other ``OSError``)
    with the row untouched, and the database's errors if the row could not be updated.
    """
    if sidecar is None:
        final = move_into_place(original, destination)
    else:
        final = quarantine_file(original, destination, sidecar)
    if final != destination:  # the name was taken: keep the row truthful
        with sessions.begin() as session:
            entry = get_entry(session, entry_id)
            if entry is not None:
                entry.archived_path = str(final)
    return final


def stored_sidecar(row: RowSnapshot) -> Sidecar | None:
    """The sidecar of a stored row's original, filed after the task that stored the row (the
    intake or the lease keeper finishing an interrupted move); None for a ``done`` row, whose
    original goes to the archive without one.

    A final row stored without a reason (never written by this code, but a database may hold
    one) is filed as a processing error rather than left staged for ever.
    """
    if row.status is Status.DONE:
        return None
    return Sidecar(
        row.reason or Reason.PROCESSING_ERROR.value,
        row.reason_detail if row.reason else "the row was stored without a reason",
        file_sha256=row.file_sha256,
        worklist_id=row.id,
        status=row.status.value,
        received_at=row.received_at,
    )
