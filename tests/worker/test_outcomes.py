"""Outcome invariants that protect the filing of a quarantined original."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from db.models import Status
from ingest.errors import Reason
from worker.outcomes import row_sidecar


def test_a_final_row_without_a_reason_still_gets_a_sidecar():
    """The lease keeper and the intake build sidecars for whole lists of rows: one odd row
    (a final status stored without a reason) must not stop the filing of the others."""
    row = SimpleNamespace(
        id=7,
        status=Status.FAILED,
        reason=None,
        reason_detail=None,
        source_name="x.dcm",
        file_sha256="a" * 64,
        received_at=datetime(2026, 11, 29, tzinfo=UTC),
    )
    sidecar = row_sidecar(row)
    assert sidecar.reason == Reason.PROCESSING_ERROR.value
    assert sidecar.detail and sidecar.worklist_id == 7


def test_a_stored_reason_and_detail_are_kept():
    row = SimpleNamespace(
        id=8,
        status=Status.REJECTED,
        reason=Reason.CORRUPT.value,
        reason_detail="The file is not valid DICOM.",
        source_name="y.dcm",
        file_sha256="b" * 64,
        received_at=datetime(2026, 11, 29, tzinfo=UTC),
    )
    sidecar = row_sidecar(row)
    assert (sidecar.reason, sidecar.detail) == ("corrupt", "The file is not valid DICOM.")
