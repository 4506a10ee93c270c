"""File names and header values that the file system or the database cannot take as they are.

Reproduces issue 12: a 255-byte name could not be archived (the archive name prefixes the
content hash), after its row was committed ``done``: the file stayed in the inbox, its
batch-mates were never filed, and ``run --exit-when-idle`` never exited. A name that is not
valid UTF-8, or a Patient ID with an embedded NUL (PostgreSQL), failed the whole admission
batch every 10 s for ever. Each file must now end in exactly one place, its batch-mates
unharmed, with no ERROR log line and no log line naming the file. SQLite and PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Status, WorklistEntry
from db.worklist import Arrival
from ingest.filing import MAX_NAME_BYTES, archive_destination, move_into_place, safe_name
from ingest.watcher import Origin
from tests.corpus import copy_jpeg, cr_dicom, dataset_jpegs, lateral_dicom
from worker.intake import Admission, Intake
from worker.pipeline import Pipeline
from worker.scoring import Scorer
from worker.service import inbox_files
from worker.settings import Settings

LONG_STEM = "Doe^Jane-" + "x" * (255 - len("Doe^Jane-") - len(".dcm"))
LONG_NAME = LONG_STEM + ".dcm"  # exactly 255 bytes: the longest name ext4 allows
NOT_UTF8 = os.fsdecode(b"M\xfcller^Hans\xff.dcm")  # Latin-1 from an old share, and a stray byte


def _no_model() -> Scorer:
    raise AssertionError("the model must not be loaded for files that cannot be scored")


def _rows(sessions: sessionmaker[Session]) -> dict[str, WorklistEntry]:
    with sessions() as session:
        return {r.source_name: r for r in session.scalars(select(WorklistEntry))}


def _admit(settings: Settings, sessions: sessionmaker[Session], paths: list[Path]) -> list[int]:
    sent: list[int] = []
    intake = Intake(settings, sessions, lambda entry_ids, origin: sent.extend(entry_ids))
    assert intake([(path, Origin.LIVE) for path in paths]) == []  # none handed back
    return sent


def _assert_quiet(caplog: pytest.LogCaptureFixture, *names: str) -> None:
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    text = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    for name in names:
        assert name not in text and name[:40] not in text


def test_safe_names_fit_every_suffix_the_filing_adds() -> None:
    for name in (LONG_NAME, NOT_UTF8, os.fsdecode(b"\xff" * 255), "名" * 85):
        safe = safe_name(name)
        safe.encode("utf-8")  # valid UTF-8
        assert len(safe.encode()) <= MAX_NAME_BYTES
        partial_sidecar = f".{'0' * 16}_{safe}-9999.json.partial"
        assert len(partial_sidecar.encode()) <= 255
    assert safe_name("IM-0001.dcm") == "IM-0001.dcm"
    assert safe_name(LONG_NAME).endswith(".dcm") and safe_name(LONG_NAME) != safe_name(
        LONG_STEM[:-1] + "y.dcm"
    )


def test_a_255_byte_name_can_be_archived(tmp_path: Path) -> None:
    """The ``done`` path's move (what failed after the row was committed)."""
    from datetime import UTC, datetime

    source = tmp_path / "inbox" / LONG_NAME
    source.parent.mkdir()
    source.write_bytes(b"x")
    destination = archive_destination(tmp_path / "archive", datetime.now(UTC), "f" * 64, LONG_NAME)
    final = move_into_place(source, destination)
    assert final.read_bytes() == b"x" and not source.exists()


def test_rejected_batch_mates_are_all_filed_despite_a_255_byte_name(
    settings: Settings, sessions: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    jpegs = dataset_jpegs(3)
    inbox = settings.inbox
    files = [
        lateral_dicom(jpegs[0], inbox / LONG_NAME),
        lateral_dicom(jpegs[1], inbox / "mate-1.dcm"),
        lateral_dicom(jpegs[2], inbox / "mate-2.dcm"),
    ]
    sent = _admit(settings, sessions, files)
    Pipeline(settings, sessions, _no_model).triage(sent[0], token="task-1")
    rows = _rows(sessions)
    assert {(r.status, r.reason) for r in rows.values()} == {(Status.REJECTED, "lateral_view")}
    assert len(rows) == 3
    for row in rows.values():
        assert Path(row.archived_path or "").is_file(), row.source_name
        assert Path(row.archived_path or "").name == f"{row.file_sha256[:16]}.dcm"
    assert list(inbox_files(inbox)) == []  # run --exit-when-idle sees an empty inbox
    quarantined = sorted((settings.quarantine / "lateral_view").glob("*.dcm"))
    assert len(quarantined) == 3
    _assert_quiet(caplog, LONG_STEM)


def test_a_name_that_is_not_utf8_is_escaped_admitted_and_filed(
    settings: Settings, sessions: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    jpegs = dataset_jpegs(2)
    inbox = settings.inbox
    bad = lateral_dicom(jpegs[0], inbox / NOT_UTF8)
    mate = lateral_dicom(jpegs[1], inbox / "mate.dcm")
    sent = _admit(settings, sessions, [bad, mate])  # one batch: neither holds the other up
    assert len(sent) == 2
    rows = _rows(sessions)
    assert set(rows) == {r"M\xfcller^Hans\xff.dcm", "mate.dcm"}
    Pipeline(settings, sessions, _no_model).triage(sent[0], token="task-1")
    rows = _rows(sessions)
    assert {r.status for r in rows.values()} == {Status.REJECTED}
    assert all(Path(r.archived_path or "").is_file() for r in rows.values())
    assert list(inbox_files(inbox)) == []
    _assert_quiet(caplog, "ller^Hans")


def test_a_folder_name_that_is_not_utf8_is_escaped_too(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    folder = settings.inbox / os.fsdecode(b"Station \xe9t\xe9")
    folder.mkdir()
    path = lateral_dicom(dataset_jpegs(1)[0], folder / "a.dcm")
    assert len(_admit(settings, sessions, [path])) == 1
    assert set(_rows(sessions)) == {r"Station \xe9t\xe9/a.dcm"}


def test_a_patient_id_with_an_embedded_nul_is_admitted_sanitised(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    jpegs = dataset_jpegs(2)
    nul = cr_dicom(jpegs[0], settings.inbox / "nul.dcm", PatientID="AB\x00CD\x07")
    mate = copy_jpeg(jpegs[1], settings.inbox / "mate.jpeg")
    intake = Intake(settings, sessions, lambda entry_id, origin: None)
    admissions = intake.admit_many([(nul, Origin.LIVE), (mate, Origin.LIVE)])
    assert admissions == {nul: Admission.QUEUED, mate: Admission.QUEUED}
    assert _rows(sessions)["nul.dcm"].patient_id == "ABCD"


@pytest.mark.tf
def test_scored_batch_mates_are_archived_and_published_despite_a_255_byte_name(
    settings: Settings,
    sessions: sessionmaker[Session],
    model_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The finding itself: a ``done`` row whose original cannot be moved stalled its mates."""
    from model.predict import Classifier

    caplog.set_level(logging.INFO)
    classifier = Classifier.load(model_dir)
    jpegs = dataset_jpegs(2)
    files = [
        copy_jpeg(jpegs[0], settings.inbox / (LONG_STEM[:-1] + ".jpeg")),
        copy_jpeg(jpegs[1], settings.inbox / "mate.jpeg"),
    ]
    sent = _admit(settings, sessions, files)
    published: list[int] = []
    pipeline = Pipeline(settings, sessions, lambda: classifier, on_scored=published.extend)
    pipeline.triage(sent[0], token="task-1")
    rows = _rows(sessions)
    assert {r.status for r in rows.values()} == {Status.DONE}
    assert sorted(published) == sorted(r.id for r in rows.values())
    for row in rows.values():
        archived = Path(row.archived_path or "")
        assert archived.is_file() and archived.is_relative_to(settings.archive)
    assert list(inbox_files(settings.inbox)) == []
    _assert_quiet(caplog, LONG_STEM)


class _UnsanitisedIntake(Intake):
    """Intake as if a reader let a raw header value through (the defence behind
    sanitising): the value for ``bad.dcm`` reaches the database as read."""

    raw_patient_id = "AB\udcffCD"

    def _arrival(self, path: Path, source_name: str) -> Arrival:
        arrival = super()._arrival(path, source_name)
        if path.name != "bad.dcm":
            return arrival
        return dataclasses.replace(arrival, patient_id=self.raw_patient_id)


@pytest.mark.parametrize("raw", ["AB\udcffCD", "AB\x00CD"])
def test_a_value_the_database_refuses_quarantines_that_file_alone(
    settings: Settings, sessions: sessionmaker[Session], caplog: pytest.LogCaptureFixture, raw: str
) -> None:
    caplog.set_level(logging.INFO)
    jpegs = dataset_jpegs(3)
    inbox = settings.inbox
    bad = cr_dicom(jpegs[0], inbox / "bad.dcm", PatientID="ABCD")
    mates = [copy_jpeg(jpeg, inbox / f"mate-{n}.jpeg") for n, jpeg in enumerate(jpegs[1:])]
    intake = _UnsanitisedIntake(settings, sessions, lambda entry_id, origin: None)
    intake.raw_patient_id = raw
    batch = [(path, Origin.LIVE) for path in (bad, *mates)]
    admissions = intake.admit_many(batch)
    assert [admissions[m] for m in mates] == [Admission.QUEUED, Admission.QUEUED]
    rows = _rows(sessions)
    if admissions[bad] is Admission.REFUSED:  # PostgreSQL refuses both; SQLite takes a NUL
        assert "bad.dcm" not in rows and not bad.exists()
        (quarantined,) = (settings.quarantine / "corrupt").glob("*.dcm")
        assert "bad" not in quarantined.name  # named by hash (issue 20)
        assert "refused" in json.loads(Path(f"{quarantined}.json").read_text())["detail"]
    else:
        assert admissions[bad] is Admission.QUEUED and raw == "AB\x00CD"
        assert settings.database_url.startswith("sqlite")
    assert intake(batch) == []  # handed again: nothing comes back for another try
    _assert_quiet(caplog, "AB\udcffCD", "AB\x00CD")
