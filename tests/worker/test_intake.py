"""The watcher's callback: one row per content, duplicates quarantined, interrupted moves
finished, lost tasks sent again."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Status, WorklistEntry, utcnow
from ingest.watcher import Origin
from tests.corpus import copy_jpeg, cr_dicom, dataset_jpegs
from worker.intake import Admission, Intake
from worker.settings import Settings


class Sent(list[tuple[int, Origin]]):
    """Every row id sent, flattened; ``messages`` keeps each task's batch of ids."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[tuple[list[int], Origin]] = []

    def __call__(self, entry_ids: list[int], origin: Origin) -> None:
        self.messages.append((list(entry_ids), origin))
        self.extend((entry_id, origin) for entry_id in entry_ids)


def _intake(settings: Settings, sessions: sessionmaker[Session]) -> tuple[Intake, Sent]:
    sent = Sent()
    settings.inbox.mkdir(parents=True, exist_ok=True)
    return Intake(settings, sessions, sent, outage=(BrokerError,)), sent


def _rows(sessions: sessionmaker[Session]) -> list[WorklistEntry]:
    with sessions() as session:
        return list(session.scalars(select(WorklistEntry).order_by(WorklistEntry.id)))


def test_a_new_dicom_becomes_one_queued_row_with_its_header(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    intake, sent = _intake(settings, sessions)
    path = cr_dicom(dataset_jpegs(1)[0], settings.inbox / "a.dcm", AccessionNumber="ACC42")
    assert intake.admit(path, Origin.LIVE) is Admission.QUEUED
    (row,) = _rows(sessions)
    assert sent == [(row.id, Origin.LIVE)]
    assert row.status is Status.QUEUED and row.accession_number == "ACC42"
    assert row.source_kind == "dicom" and row.sop_instance_uid and len(row.file_sha256) == 64
    # handed again while queued: the task may have been lost, so it is sent again
    assert intake.admit(path, Origin.LIVE) is Admission.REQUEUED
    assert _rows(sessions)[0].id == row.id and len(_rows(sessions)) == 1


def test_the_same_content_under_another_name_is_quarantined_as_a_duplicate(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    intake, sent = _intake(settings, sessions)
    jpeg = dataset_jpegs(1)[0]
    first = copy_jpeg(jpeg, settings.inbox / "a.jpeg")
    second = copy_jpeg(jpeg, settings.inbox / "copy-of-a.jpeg")
    assert intake.admit(first, Origin.LIVE) is Admission.QUEUED
    assert intake.admit(second, Origin.LIVE) is Admission.DUPLICATE
    assert len(_rows(sessions)) == 1 and len(sent) == 1
    assert not second.exists()
    (sidecar,) = (settings.quarantine / "duplicate").glob("*.json")
    content = json.loads(sidecar.read_text())
    assert content["duplicate_of_worklist_id"] == _rows(sessions)[0].id
    assert Path(str(sidecar)[: -len(".json")]).read_bytes() == jpeg.read_bytes()


def test_a_final_row_whose_original_is_still_in_the_inbox_is_filed(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    intake, sent = _intake(settings, sessions)
    path = copy_jpeg(dataset_jpegs(1)[0], settings.inbox / "a.jpeg")
    intake.admit(path, Origin.LIVE)
    destination = settings.archive / "2026" / "a.jpeg"
    with sessions.begin() as session:  # a worker committed, then died before the move
        row = session.scalars(select(WorklistEntry)).one()
        row.status, row.archived_path, row.finished_at = Status.DONE, str(destination), utcnow()
    assert intake.admit(path, Origin.BACKFILL) is Admission.REFILED
    assert destination.is_file() and not path.exists() and len(sent) == 1


def test_a_processing_row_is_left_alone_until_its_claim_is_stale(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    intake, sent = _intake(settings, sessions)
    path = copy_jpeg(dataset_jpegs(1)[0], settings.inbox / "a.jpeg")
    intake.admit(path, Origin.LIVE)
    with sessions.begin() as session:
        row = session.scalars(select(WorklistEntry)).one()
        row.status, row.started_at, row.claim_token = Status.PROCESSING, utcnow(), "t1"
    assert intake.admit(path, Origin.LIVE) is Admission.WAITING
    with sessions.begin() as session:
        row = session.scalars(select(WorklistEntry)).one()
        row.started_at = utcnow() - timedelta(seconds=settings.requeue_after_s + 1)
    assert intake.admit(path, Origin.LIVE) is Admission.REQUEUED
    assert len(sent) == 2


def test_a_symlink_is_quarantined_unread_without_a_row(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    intake, sent = _intake(settings, sessions)
    secret = tmp_path / "etc-shadow"
    secret.write_text("root:x")
    link = settings.inbox / "evil.dcm"
    os.symlink(secret, link)
    assert intake.admit(link, Origin.LIVE) is Admission.UNSAFE
    assert not link.is_symlink() and secret.read_text() == "root:x"
    assert (settings.quarantine / "unsafe_path").is_dir() and _rows(sessions) == []
    assert sent == []


def test_a_burst_is_admitted_together_and_each_file_gets_its_own_outcome(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    intake, sent = _intake(settings, sessions)
    jpegs = dataset_jpegs(3)
    files = [copy_jpeg(jpeg, settings.inbox / f"{n}.jpeg") for n, jpeg in enumerate(jpegs)]
    copy = copy_jpeg(jpegs[0], settings.inbox / "copy.jpeg")
    gone = settings.inbox / "gone.jpeg"
    batch = [(path, Origin.BACKFILL) for path in [*files, copy, gone]]
    assert intake(batch) == []  # nothing to hand again
    rows = _rows(sessions)
    assert [row.source_path for row in rows] == [str(path) for path in files]
    assert sent == [(row.id, Origin.BACKFILL) for row in rows]  # in arrival order
    assert not copy.exists()  # quarantined as a duplicate of the first
    assert intake.admit_many(batch) == {
        **{path: Admission.REQUEUED for path in files},
        copy: Admission.VANISHED,
        gone: Admission.VANISHED,
    }


def test_a_file_the_system_cannot_read_now_is_handed_back_alone(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    intake, sent = _intake(settings, sessions)
    ok = copy_jpeg(dataset_jpegs(1)[0], settings.inbox / "ok.jpeg")
    unreadable = settings.inbox / ("x" * 300)  # lstat fails: ENAMETOOLONG, not "missing"
    assert intake([(ok, Origin.LIVE), (unreadable, Origin.LIVE)]) == [unreadable]
    assert [row.source_path for row in _rows(sessions)] == [str(ok)]
    assert len(sent) == 1


def test_a_task_that_cannot_be_sent_hands_back_its_file_and_spares_the_others(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    settings.inbox.mkdir(parents=True, exist_ok=True)
    sent: list[int] = []
    failures = {2: RuntimeError("a bug in sending"), 3: BrokerError("broker down")}

    def enqueue(entry_ids: list[int], origin: Origin) -> None:
        (entry_id,) = entry_ids  # batch size 1: one row per task
        if entry_id in failures:
            raise failures.pop(entry_id)
        sent.append(entry_id)

    intake = Intake(
        settings.model_copy(update={"batch_size": 1}), sessions, enqueue, outage=(BrokerError,)
    )
    files = [
        copy_jpeg(jpeg, settings.inbox / f"{n}.jpeg") for n, jpeg in enumerate(dataset_jpegs(4))
    ]
    admissions = intake.admit_many([(path, Origin.LIVE) for path in files])
    # row 2: that file alone; row 3: the broker is down, so row 4 is not even tried
    assert list(admissions.values()) == [
        Admission.QUEUED,
        Admission.RETRY,
        Admission.RETRY,
        Admission.RETRY,
    ]
    assert sent == [1] and len(_rows(sessions)) == 4  # rows committed, nothing lost
    again = intake.admit_many([(path, Origin.LIVE) for path in files[1:]])
    assert set(again.values()) == {Admission.REQUEUED} and sent == [1, 2, 3, 4]


def test_one_task_per_batch_of_rows_and_a_failed_send_hands_back_that_batch_only(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    """Seven new files, batch size 3: tasks of 3, 3 and 1 rows, live before backfill; a task
    that cannot be sent hands back its own three files, which are sent again later."""
    settings.inbox.mkdir(parents=True, exist_ok=True)
    messages: list[tuple[list[int], Origin]] = []
    fail_once = [True]

    def enqueue(entry_ids: list[int], origin: Origin) -> None:
        if len(messages) == 1 and fail_once[0]:
            fail_once[0] = False
            raise RuntimeError("a bug in sending")
        messages.append((list(entry_ids), origin))

    intake = Intake(settings.model_copy(update={"batch_size": 3}), sessions, enqueue)
    jpegs = dataset_jpegs(7)
    files = [copy_jpeg(j, settings.inbox / f"{n}.jpeg") for n, j in enumerate(jpegs)]
    origins = [Origin.BACKFILL, *[Origin.LIVE] * 5, Origin.BACKFILL]
    admissions = intake.admit_many(list(zip(files, origins, strict=True)))
    ids = {row.source_path: row.id for row in _rows(sessions)}
    live = [ids[str(f)] for f, o in zip(files, origins, strict=True) if o is Origin.LIVE]
    backfill = [ids[str(f)] for f, o in zip(files, origins, strict=True) if o is Origin.BACKFILL]
    # the second live batch failed: its files are handed back, the backfill batch still sent
    assert messages == [(live[:3], Origin.LIVE), (backfill, Origin.BACKFILL)]
    handed_back = [f for f, a in admissions.items() if a is Admission.RETRY]
    assert [ids[str(f)] for f in handed_back] == live[3:]
    again = intake.admit_many([(f, Origin.LIVE) for f in handed_back])
    assert set(again.values()) == {Admission.REQUEUED}
    assert messages[-1] == (live[3:], Origin.BACKFILL)  # a re-send never counts as live
