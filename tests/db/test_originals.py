"""Filing a row's original (the one step the pipeline, the lease keeper and the intake share)
and the sidecar a stored row's quarantined original carries; real files, SQLite and
PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from db.models import Status, WorklistEntry
from db.originals import file_original, stored_sidecar
from db.snapshot import RowSnapshot
from db.worklist import Arrival, admit
from ingest.errors import Reason
from ingest.filing import Sidecar, sidecar_path


def snapshot(
    status: Status, reason: str | None, detail: str | None, row_id: int = 7
) -> RowSnapshot:
    return RowSnapshot(
        id=row_id,
        status=status,
        file_sha256="a" * 64,
        source_name="x.dcm",
        source_path="/inbox/x.dcm",
        archived_path="/quarantine/x.dcm",
        reason=reason,
        reason_detail=detail,
        received_at=datetime(2026, 11, 29, tzinfo=UTC),
    )


def _row(sessions: sessionmaker[Session], archived_path: str) -> int:
    with sessions.begin() as session:
        entry, _ = admit(session, Arrival("b" * 64, "x.dcm", "/inbox/x.dcm"))
        entry.archived_path = archived_path
        return entry.id


def _archived_path(sessions: sessionmaker[Session], entry_id: int) -> str | None:
    with sessions() as session:
        entry = session.get(WorklistEntry, entry_id)
        assert entry is not None
        return entry.archived_path


def test_a_final_row_without_a_reason_still_gets_a_sidecar() -> None:
    """The lease keeper and the intake build sidecars for whole lists of rows: one odd row
    (a final status stored without a reason) must not stop the filing of the others."""
    sidecar = stored_sidecar(snapshot(Status.FAILED, None, None))
    assert sidecar is not None
    assert sidecar.reason == Reason.PROCESSING_ERROR.value
    assert sidecar.detail and sidecar.worklist_id == 7


def test_a_stored_reason_and_detail_are_kept() -> None:
    sidecar = stored_sidecar(snapshot(Status.REJECTED, "corrupt", "The file is not valid DICOM."))
    assert sidecar is not None
    assert (sidecar.reason, sidecar.detail) == ("corrupt", "The file is not valid DICOM.")
    assert (sidecar.status, sidecar.file_sha256) == ("rejected", "a" * 64)


def test_a_done_row_is_archived_without_a_sidecar() -> None:
    assert stored_sidecar(snapshot(Status.DONE, None, None)) is None


def test_a_free_destination_leaves_the_row_as_stored(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    destination = tmp_path / "archive" / "2026" / "bbbb.dcm"
    entry_id = _row(sessions, str(destination))
    original = tmp_path / "staged"
    original.write_bytes(b"original")
    assert file_original(sessions, entry_id, original, destination, None) == destination
    assert destination.read_bytes() == b"original" and not original.exists()
    assert _archived_path(sessions, entry_id) == str(destination)


def test_a_taken_name_is_never_overwritten_and_the_row_follows_the_file(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """What the intake's copy of this step skipped: the row must name where the file is."""
    destination = tmp_path / "quarantine" / "corrupt" / "bbbb.dcm"
    destination.parent.mkdir(parents=True)
    destination.write_bytes(b"someone else's")
    entry_id = _row(sessions, str(destination))
    original = tmp_path / "staged"
    original.write_bytes(b"original")
    sidecar = Sidecar("corrupt", "The file is not valid DICOM.", worklist_id=entry_id)
    final = file_original(sessions, entry_id, original, destination, sidecar)
    assert final == destination.with_name("bbbb-1.dcm")
    assert final.read_bytes() == b"original" and destination.read_bytes() == b"someone else's"
    assert json.loads(sidecar_path(final).read_text())["worklist_id"] == entry_id
    assert _archived_path(sessions, entry_id) == str(final)


def test_a_failed_move_leaves_the_row_untouched(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    destination = tmp_path / "archive" / "bbbb.dcm"
    entry_id = _row(sessions, str(destination))
    with pytest.raises(OSError):
        file_original(sessions, entry_id, tmp_path / "gone", destination, None)
    assert _archived_path(sessions, entry_id) == str(destination)
