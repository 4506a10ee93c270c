"""The pipeline without Celery: bad input is stored and quarantined, never retried.

These cases never reach the model (the scorer is only loaded when an image is scorable), so
they run without TensorFlow; scored rows are covered by the TensorFlow-marked tests and the
end-to-end tests with the real classifier.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Status, WorklistEntry
from ingest.watcher import Origin
from tests.corpus import ct_dicom, dataset_jpegs, lateral_dicom, truncated_copy
from worker.intake import Intake
from worker.pipeline import Pipeline, Scorer, row_ids
from worker.settings import Settings


def _no_model() -> Scorer:
    raise AssertionError("the model must not be loaded for files that cannot be scored")


@pytest.fixture
def queued(settings: Settings, sessions: sessionmaker[Session], tmp_path: Path) -> list[int]:
    settings.inbox.mkdir(parents=True)
    jpegs = dataset_jpegs(2)
    files = [
        lateral_dicom(jpegs[0], settings.inbox / "lateral.dcm"),
        ct_dicom(settings.inbox / "ct.dcm"),
        truncated_copy(jpegs[1], settings.inbox / "truncated.jpeg", keep=0.3),
    ]
    sent: list[int] = []
    intake = Intake(settings, sessions, lambda entry_ids, origin: sent.extend(entry_ids))
    for path in files:
        intake.admit(path, Origin.LIVE)
    return sent


def test_unscorable_files_are_rejected_with_their_reason_and_quarantined(
    settings: Settings, sessions: sessionmaker[Session], queued: list[int]
) -> None:
    pipeline = Pipeline(settings, sessions, _no_model)
    outcomes = pipeline.triage(queued[0], token="task-1")
    assert len(outcomes) == 3  # the first task took the other two as batch-mates
    assert pipeline.triage(queued[1], token="task-2") == []  # their own tasks: no-ops
    with sessions() as session:
        rows = {r.source_name: r for r in session.scalars(select(WorklistEntry))}
    assert {name: (r.status, r.reason) for name, r in rows.items()} == {
        "lateral.dcm": (Status.REJECTED, "lateral_view"),
        "ct.dcm": (Status.REJECTED, "wrong_sop_class"),
        "truncated.jpeg": (Status.REJECTED, "truncated"),
    }
    for row in rows.values():
        archived = Path(row.archived_path or "")
        assert archived.is_file() and archived.parent.name == row.reason
        sidecar = json.loads(archived.with_name(archived.name + ".json").read_text())
        assert sidecar["worklist_id"] == row.id and sidecar["reason"] == row.reason
        assert row.finished_at is not None and row.probability is None
    assert [p for p in settings.inbox.rglob("*") if p.is_file()] == []


def test_a_file_gone_from_the_inbox_fails_without_a_move(
    settings: Settings, sessions: sessionmaker[Session], queued: list[int]
) -> None:
    (settings.inbox / "lateral.dcm").unlink()
    Pipeline(settings, sessions, _no_model).triage(queued[0], token="t")
    with sessions() as session:
        row = session.get(WorklistEntry, queued[0])
        assert row is not None and row.status is Status.FAILED
        assert row.reason == "processing_error"


def test_a_file_replaced_after_admission_is_not_scored_under_the_old_row(
    settings: Settings, sessions: sessionmaker[Session], queued: list[int]
) -> None:
    # A sender overwrites lateral.dcm with another image after the watcher admitted it: the
    # old row (another patient's header) must not take the new pixels, nor move the file.
    replacement = ct_dicom(settings.inbox / "other.dcm").read_bytes()
    (settings.inbox / "other.dcm").unlink()
    (settings.inbox / "lateral.dcm").write_bytes(replacement)
    Pipeline(settings, sessions, _no_model).triage(queued[0], token="t")
    with sessions() as session:
        row = session.get(WorklistEntry, queued[0])
        assert row is not None and row.status is Status.FAILED
        assert "replaced" in (row.reason_detail or "")
    assert (settings.inbox / "lateral.dcm").read_bytes() == replacement


def test_a_row_reclaimed_by_another_task_is_neither_recorded_nor_filed(
    settings: Settings, sessions: sessionmaker[Session], queued: list[int]
) -> None:
    published: list[int] = []
    pipeline = Pipeline(settings, sessions, _no_model, on_scored=published.extend)
    jobs = pipeline._claim(queued[0], token="presumed-dead")
    with sessions.begin() as session:  # another task took the rows over meanwhile
        for job in jobs:
            entry = session.get(WorklistEntry, job.id)
            assert entry is not None
            entry.claim_token = "the-other-task"
    outcomes = pipeline._outcomes(jobs)
    assert pipeline._record(outcomes, token="presumed-dead") == set()
    # not filed: each file waits in staging, under its row id, for the task that holds it now
    assert sorted(p.name for p in settings.inbox.rglob("*") if p.is_file()) == sorted(
        str(job.id) for job in jobs
    )
    assert not settings.archive.exists() and not settings.quarantine.exists()


def test_a_message_of_one_bare_id_names_that_row() -> None:
    """The one-row task messages of 0.1 (an int) still name their row after an upgrade."""
    assert row_ids(7) == [7]
    assert row_ids((3, 4)) == [3, 4]
    assert row_ids([]) == []
