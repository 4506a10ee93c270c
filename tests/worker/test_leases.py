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
from ingest.staging import stage, staging_dir
from ingest.watcher import Origin
from tests.corpus import ct_dicom, dataset_jpegs, lateral_dicom, truncated_copy
from worker.intake import Intake
from worker.leases import LeaseKeeper
from worker.pipeline import Pipeline, Scorer
from worker.settings import Settings


def _no_model() -> Scorer:
    raise AssertionError("the model must not be loaded here")


def _admit(settings: Settings, sessions: sessionmaker[Session], files: list[Path]) -> list[int]:
    sent: list[int] = []
    intake = Intake(settings, sessions, lambda entry_id, origin: sent.append(entry_id))
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
    settings.inbox_dir.mkdir(parents=True)
    jpegs = dataset_jpegs(2)
    return _admit(
        settings,
        sessions,
        [
            lateral_dicom(jpegs[0], settings.inbox_dir / "lateral.dcm"),
            ct_dicom(settings.inbox_dir / "ct.dcm"),
            truncated_copy(jpegs[1], settings.inbox_dir / "truncated.jpeg", keep=0.3),
        ],
    )


def test_a_file_whose_attempts_keep_dying_is_failed_unread_after_max_attempts(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    settings.inbox_dir.mkdir(parents=True)
    source = settings.inbox_dir / "oom.jpeg"
    shutil.copy(dataset_jpegs(1)[0], source)  # scorable: only the cap keeps it from the model
    (entry_id,) = _admit(settings, sessions, [source])
    pipeline = Pipeline(settings, sessions, _no_model)
    assert settings.max_attempts == 3
    for _ in range(settings.max_attempts):  # each attempt's worker is killed while it reads
        (job,) = pipeline._claim(entry_id, token="oom-task")  # the same message, redelivered
        stage(job.source, job.staged)
    (outcome,) = pipeline.triage(entry_id, token="oom-task")  # the fourth delivery
    assert (outcome.status, outcome.reason) == (Status.FAILED, "too_many_attempts")
    row = _rows(sessions, [entry_id])[entry_id]
    assert (row.status, row.reason, row.attempts) == (Status.FAILED, "too_many_attempts", 4)
    quarantined = Path(row.archived_path or "")
    assert quarantined.parent == settings.quarantine_dir / "too_many_attempts"
    assert quarantined.read_bytes() == dataset_jpegs(1)[0].read_bytes()
    sidecar = json.loads(quarantined.with_name(quarantined.name + ".json").read_text())
    assert sidecar["reason"] == "too_many_attempts" and "3 attempts" in sidecar["detail"]
    assert _files_under(settings.inbox_dir) == []
    assert pipeline.triage(entry_id, token="oom-task") == []  # a fifth delivery: nothing


def test_the_keeper_renews_running_claims_and_hands_dead_ones_to_one_new_task(
    settings: Settings, sessions: sessionmaker[Session], unscorable: list[int]
) -> None:
    live_row, *dead_rows = unscorable
    live = claim_autocommit(
        sessions, live_row, "live-task", batch_size=1, stale_before=utcnow(), claimed_by="a:1"
    )
    dead = Pipeline(settings, sessions, _no_model)._claim(dead_rows[0], token="dead-task")
    assert [e.id for e in live] == [live_row] and [j.entry_id for j in dead] == dead_rows
    for job in dead:  # the dead node had staged its files
        stage(job.source, job.staged)
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

    outcomes = Pipeline(settings, sessions, _no_model).triage(sent[0], token="takeover")
    assert sorted(o.entry_id for o in outcomes) == dead_rows  # one task, both rows
    assert Pipeline(settings, sessions, _no_model).triage(sent[1], token="takeover-2") == []
    # The dead task's message, redelivered at last (Redis' visibility timeout): a no-op.
    assert Pipeline(settings, sessions, _no_model).triage(dead_rows[0], token="dead-task") == []
    rows = _rows(sessions, dead_rows)
    assert {(r.status, r.attempts, r.claim_token) for r in rows.values()} == {
        (Status.REJECTED, 2, "takeover")
    }
    filed = _files_under(settings.quarantine_dir)
    assert sorted(Path(r.archived_path or "") for r in rows.values()) == [
        p for p in filed if p.suffix != ".json"
    ]
    # left: the live task's file, which it has not staged yet
    assert _files_under(settings.inbox_dir) == [settings.inbox_dir / "lateral.dcm"]


def test_the_keeper_files_a_staged_original_whose_move_never_happened(
    settings: Settings, sessions: sessionmaker[Session], unscorable: list[int]
) -> None:
    pipeline = Pipeline(settings, sessions, _no_model)
    jobs = pipeline._claim(unscorable[0], token="task")
    recorded = pipeline._record(pipeline._outcomes(jobs), token="task")  # then the crash
    assert recorded == set(unscorable)
    assert len(_files_under(staging_dir(settings.inbox_dir))) == 3
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
    assert _files_under(settings.inbox_dir) == []
