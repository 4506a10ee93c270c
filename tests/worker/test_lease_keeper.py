"""Claims that outlive their worker: the poison-file cap, lease take-over, staged refiling.

Real files, the real intake, claim and pipeline, SQLite and PostgreSQL. A killed attempt is
what the database and the file system show after one: a claim taken (and the file staged)
and nothing recorded. The files here are never scorable, so no model is needed, except in
the poison test, where a scorable file must never reach the model.
"""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from db.models import Status, WorklistEntry, utcnow
from db.worklist import claim_autocommit, get_entries
from ingest.staging import stage, staged_path, staging_dir
from ingest.watcher import Origin
from tests.corpus import cr_dicom, ct_dicom, dataset_jpegs, lateral_dicom, truncated_copy
from worker.intake import Intake
from worker.lease_keeper import LeaseKeeper
from worker.pipeline import Pipeline, Scorer
from worker.settings import Settings


def _no_model() -> Scorer:
    raise AssertionError("the model must not be loaded here")


def _admit(settings: Settings, sessions: sessionmaker[Session], files: list[Path]) -> list[int]:
    sent: list[int] = []
    intake = Intake(settings, sessions, lambda entry_ids, origin: sent.extend(entry_ids))
    for path in files:
        intake.admit(path, Origin.LIVE)
    return sent


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _rows(sessions: sessionmaker[Session], ids: list[int]) -> dict[int, WorklistEntry]:
    with sessions() as session:
        return {row.id: row for row in get_entries(session, ids)}


@pytest.fixture
def unscorable(settings: Settings, sessions: sessionmaker[Session]) -> list[int]:
    settings.inbox.mkdir(parents=True)
    jpegs = dataset_jpegs(2)
    return _admit(
        settings,
        sessions,
        [
            lateral_dicom(jpegs[0], settings.inbox / "lateral.dcm"),
            ct_dicom(settings.inbox / "ct.dcm"),
            truncated_copy(jpegs[1], settings.inbox / "truncated.jpeg", keep=0.3),
        ],
    )


def test_a_file_whose_attempts_keep_dying_is_failed_unread_after_max_attempts(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    settings.inbox.mkdir(parents=True)
    source = settings.inbox / "oom.jpeg"
    shutil.copy(dataset_jpegs(1)[0], source)  # scorable: only the cap keeps it from the model
    (entry_id,) = _admit(settings, sessions, [source])
    pipeline = Pipeline(settings, sessions, _no_model)
    assert settings.max_attempts == 3
    for _ in range(settings.max_attempts):  # each attempt's worker is killed while it reads
        (job,) = pipeline._claim(entry_id, token="oom-task")  # the same message, redelivered
        stage(job.source, staged_path(settings.inbox, job.id))
    (outcome,) = pipeline.triage(entry_id, token="oom-task")  # the fourth delivery
    assert (outcome.status, outcome.reason) == (Status.FAILED, "too_many_attempts")
    row = _rows(sessions, [entry_id])[entry_id]
    assert (row.status, row.reason, row.attempts) == (Status.FAILED, "too_many_attempts", 4)
    quarantined = Path(row.archived_path or "")
    assert quarantined.parent == settings.quarantine / "too_many_attempts"
    assert quarantined.read_bytes() == dataset_jpegs(1)[0].read_bytes()
    sidecar = json.loads(quarantined.with_name(quarantined.name + ".json").read_text())
    assert sidecar["reason"] == "too_many_attempts" and "3 attempts" in sidecar["detail"]
    assert _files_under(settings.inbox) == []
    assert pipeline.triage(entry_id, token="oom-task") == []  # a fifth delivery: nothing


def test_the_keeper_renews_running_claims_and_hands_dead_ones_to_new_tasks(
    settings: Settings, sessions: sessionmaker[Session], unscorable: list[int]
) -> None:
    live_row, *dead_rows = unscorable
    live = claim_autocommit(
        sessions, live_row, "live-task", batch_size=1, stale_before=utcnow(), claimed_by="a:1"
    )
    dead = Pipeline(settings, sessions, _no_model)._claim(dead_rows[0], token="dead-task")
    assert [e.id for e in live] == [live_row] and [j.id for j in dead] == dead_rows
    for job in dead:  # the dead node had staged its files
        stage(job.source, staged_path(settings.inbox, job.id))
    with sessions.begin() as session:  # time passes: every lease has run out
        session.execute(
            update(WorklistEntry).values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )

    sent: list[int] = []
    keeper = LeaseKeeper(settings, sessions, running=lambda: {"live-task"}, send=sent.extend)
    assert keeper.tick() == dead_rows
    assert sent == dead_rows
    rows = _rows(sessions, unscorable)
    assert (rows[live_row].status, rows[live_row].claim_token) == (Status.PROCESSING, "live-task")
    assert rows[live_row].lease_expires_at > utcnow() + timedelta(seconds=settings.lease_s - 5)
    for entry_id in dead_rows:
        assert (rows[entry_id].status, rows[entry_id].claim_token) == (Status.QUEUED, None)
    assert keeper.tick() == [] and sent == dead_rows  # requeued rows are not sent again

    # Rows tried before are taken over one per task: no batch-mates for a possible poison.
    for entry_id, token in zip(sent, ("takeover", "takeover-2"), strict=True):
        outcomes = Pipeline(settings, sessions, _no_model).triage(entry_id, token=token)
        assert [o.entry_id for o in outcomes] == [entry_id]
    # The dead task's message, redelivered at last (Redis' visibility timeout): a no-op.
    assert Pipeline(settings, sessions, _no_model).triage(dead_rows[0], token="dead-task") == []
    rows = _rows(sessions, dead_rows)
    assert {(r.status, r.attempts, r.claim_token) for r in rows.values()} == {
        (Status.REJECTED, 2, "takeover"),
        (Status.REJECTED, 2, "takeover-2"),
    }
    filed = _files_under(settings.quarantine)
    assert sorted(Path(r.archived_path or "") for r in rows.values()) == [
        p for p in filed if p.suffix != ".json"
    ]
    # left: the live task's file, which it has not staged yet
    assert _files_under(settings.inbox) == [settings.inbox / "lateral.dcm"]


def test_the_keeper_files_a_staged_original_whose_move_never_happened(
    settings: Settings, sessions: sessionmaker[Session], unscorable: list[int]
) -> None:
    pipeline = Pipeline(settings, sessions, _no_model)
    jobs = pipeline._claim(unscorable[0], token="task")
    recorded = pipeline._record(pipeline._outcomes(jobs), token="task")  # then the crash
    assert recorded == set(unscorable)
    assert len(_files_under(staging_dir(settings.inbox))) == 3
    keeper = LeaseKeeper(settings, sessions, running=set, send=lambda ids: None)
    assert keeper.refile_staged() == 0, "too fresh: its task may be moving it right now"
    with sessions.begin() as session:
        session.execute(update(WorklistEntry).values(finished_at=utcnow() - timedelta(hours=1)))
    assert keeper.refile_staged() == 3
    for row in _rows(sessions, unscorable).values():
        archived = Path(row.archived_path or "")
        assert archived.is_file() and archived.parent.name == row.reason
        sidecar = json.loads(archived.with_name(archived.name + ".json").read_text())
        assert sidecar["worklist_id"] == row.id
    assert _files_under(settings.inbox) == []


def test_a_batch_tried_before_is_split_so_a_poison_file_cannot_fail_its_mates(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    """Three rows sent as one task whose worker died once: on redelivery the task keeps one
    row and sends the others back one task each, the redelivery's claim not counted (the
    death is, batch-mate or not); a task of one row tried before takes no batch-mates. Then
    a poison file alone reaches the cap, and no innocent row gets near it."""
    settings.inbox.mkdir(parents=True)
    files = [
        shutil.copy(jpeg, settings.inbox / f"{n}.jpeg") for n, jpeg in enumerate(dataset_jpegs(4))
    ]
    first, second, third, fresh = _admit(settings, sessions, [Path(f) for f in files])
    sent_alone: list[int] = []
    pipeline = Pipeline(settings, sessions, _no_model, send_alone=sent_alone.extend)
    batch = [first, second, third]
    assert [job.id for job in pipeline._claim(batch, "task")] == [*batch, fresh]
    jobs = pipeline._claim(batch, "task")  # redelivered: its worker died
    kept = pipeline._isolate(jobs, "task")
    assert [job.id for job in kept] == [first]
    assert sorted(sent_alone) == [second, third, fresh]
    rows = _rows(sessions, [first, second, third, fresh])
    assert (rows[first].status, rows[first].attempts) == (Status.PROCESSING, 2)
    # sent back with the redelivery's claim uncounted, the death counted: the batch-mate
    # was held by the worker that died as much as the task's own rows were
    assert [(rows[i].status, rows[i].attempts) for i in (second, third, fresh)] == [
        (Status.QUEUED, 1),
        (Status.QUEUED, 1),
        (Status.QUEUED, 1),
    ]
    # a row tried before, sent alone, takes no company, not even a never-tried row
    assert [job.id for job in pipeline._claim([second], "alone")] == [second]


def test_a_retry_after_a_transient_error_is_not_another_attempt(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    settings.inbox.mkdir(parents=True)
    source = shutil.copy(dataset_jpegs(1)[0], settings.inbox / "a.jpeg")
    (entry_id,) = _admit(settings, sessions, [Path(source)])
    pipeline = Pipeline(settings, sessions, _no_model)
    pipeline._claim([entry_id], "task")
    for _ in range(5):  # five Celery retries of the same task, each after a long wait
        pipeline.hold("task", retry_in_s=300)  # leased past it: no keeper takes it over
        (row,) = _rows(sessions, [entry_id]).values()
        assert row.lease_expires_at > utcnow() + timedelta(seconds=300)
        (job,) = pipeline._claim([entry_id], "task", retry=True)
        assert job.attempts == 1
    (job,) = pipeline._claim([entry_id], "task", retry=True)  # its worker died: counted
    assert job.attempts == 2


def test_an_instance_overwritten_before_its_claim_is_scored_from_its_new_bytes(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    """A sender overwrites ``x.dcm`` (same SOP Instance UID, other bytes) after admission but
    before the claim: the row's own bytes are gone, so the row fails and the file goes back
    to the inbox. Its next admission must not be quarantined as the failed row's duplicate
    (the case would never be read): the new bytes take the row over and are processed."""
    settings.inbox.mkdir(parents=True)
    first_jpeg, second_jpeg = dataset_jpegs(2)
    uid = "1.2.826.0.1.3680043.8.498.1234567"
    path = settings.inbox / "x.dcm"
    cr_dicom(first_jpeg, path, SOPInstanceUID=uid, ViewPosition="LL")  # lateral: no model
    (entry_id,) = _admit(settings, sessions, [path])
    cr_dicom(second_jpeg, path, SOPInstanceUID=uid, ViewPosition="LL")  # overwritten
    second_bytes = path.read_bytes()
    pipeline = Pipeline(settings, sessions, _no_model)
    (failed,) = pipeline.triage([entry_id], token="first")
    assert failed.status is Status.FAILED
    (back,) = _files_under(settings.inbox)  # put back as a new arrival
    assert back.read_bytes() == second_bytes

    again = _admit(settings, sessions, [back])
    assert again == [entry_id]  # the same row, queued again with the new bytes
    pipeline.triage([entry_id], token="second")
    row = _rows(sessions, [entry_id])[entry_id]
    assert (row.status, row.reason) == (Status.REJECTED, "lateral_view")  # processed
    assert (
        Path(row.archived_path or "").read_bytes()[-1000:]
        == (Path(row.archived_path or "").read_bytes()[-1000:])
    )
    assert row.file_sha256 != "" and _files_under(settings.inbox) == []
    assert not (settings.quarantine / "duplicate").exists()
