"""The worklist queries, on SQLite and on PostgreSQL (the ``database_url`` fixture runs both)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import Engine, event, text, update
from sqlalchemy.engine.interfaces import CacheStats
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from db import leases
from db.models import Label, Priority, ReviewDecision, Status, WorklistEntry, utcnow
from db.worklist import (
    Arrival,
    Final,
    ScoreValues,
    admit,
    admit_many,
    claim,
    claim_autocommit,
    counts_by_status,
    oldest_waiting,
    reading_order,
    record_final,
    release,
    review,
)
from ingest.image import SourceKind
from tests.support.worklist import record_scored, record_unscored

Sessions = sessionmaker[Session]


def arrival(n: int, **kwargs: str | None) -> Arrival:
    return Arrival(
        file_sha256=f"{n:064x}",
        source_name=f"f{n}.dcm",
        source_path=f"/inbox/f{n}.dcm",
        **kwargs,  # type: ignore[arg-type]
    )


def add(sessions: Sessions, n: int, **kwargs: str | None) -> int:
    with sessions.begin() as session:
        entry, created = admit(session, arrival(n, **kwargs))
        assert created
        return entry.id


def score(sessions: Sessions, entry_id: int, probability: float, rank: int) -> None:
    priority = ["urgent", "suspect", "routine"][rank]
    with sessions.begin() as session:
        entry = session.get(WorklistEntry, entry_id)
        assert entry is not None
        record_scored(
            session,
            entry,
            ScoreValues(probability, "pneumonia", priority, rank, 0.5, "m1", ("unverified",)),
            "/archive/x",
        )


def test_same_content_twice_is_one_row(sessions: Sessions) -> None:
    first = add(sessions, 1)
    with sessions.begin() as session:
        entry, created = admit(session, arrival(1))
    assert not created and entry.id == first
    with sessions() as session:
        assert session.query(WorklistEntry).count() == 1


def test_same_sop_instance_uid_is_one_row_but_absent_uids_never_clash(sessions: Sessions) -> None:
    first = add(sessions, 1, sop_instance_uid="1.2.3")
    with sessions.begin() as session:
        entry, created = admit(session, arrival(2, sop_instance_uid="1.2.3"))
    assert not created and entry.id == first
    add(sessions, 3)
    add(sessions, 4)  # two rows without a SOP Instance UID


def test_a_batch_is_admitted_in_order_with_copies_inside_and_outside_it(
    sessions: Sessions,
) -> None:
    known = add(sessions, 1, sop_instance_uid="1.2.3")
    batch = [
        arrival(2),
        arrival(1),  # content already known
        Arrival(f"{2:064x}", "copy.dcm", "/inbox/copy.dcm"),  # a copy of the first, same batch
        arrival(3, sop_instance_uid="1.2.3"),  # another file claiming a known SOP instance
        arrival(4),
    ]
    with sessions.begin() as session:
        results = [
            (entry.id, entry.source_path, created) for entry, created in admit_many(session, batch)
        ]
    new_2, new_4 = results[0][0], results[4][0]
    assert results == [
        (new_2, "/inbox/f2.dcm", True),
        (known, "/inbox/f1.dcm", False),
        (new_2, "/inbox/f2.dcm", False),
        (known, "/inbox/f1.dcm", False),
        (new_4, "/inbox/f4.dcm", True),
    ]
    with sessions() as session:
        assert session.query(WorklistEntry).count() == 3
    with sessions.begin() as session:
        assert admit_many(session, []) == []


def test_claim_takes_own_row_then_oldest_queued_batch_mates(sessions: Sessions) -> None:
    ids = [add(sessions, n) for n in range(1, 6)]
    with sessions.begin() as session:
        held = claim(
            session, ids[3], "task-a", batch_size=3, claimed_by="host:1", stale_before=utcnow()
        )
        assert [e.id for e in held] == [ids[3], ids[0], ids[1]]
        assert all(e.status == Status.PROCESSING and e.claim_token == "task-a" for e in held)


def test_duplicate_delivery_is_a_no_op_and_redelivery_reclaims(sessions: Sessions) -> None:
    ids = [add(sessions, n) for n in range(1, 4)]
    long_ago = utcnow() - timedelta(hours=1)
    with sessions.begin() as session:
        claim(session, ids[0], "task-a", batch_size=2, claimed_by="host:1", stale_before=long_ago)
    with sessions.begin() as session:  # another task's message for a held row: nothing
        assert (
            claim(
                session, ids[1], "task-b", batch_size=2, claimed_by="host:1", stale_before=long_ago
            )
            == []
        )
    with sessions.begin() as session:  # the same task redelivered: it gets its rows back
        held = claim(
            session, ids[0], "task-a", batch_size=1, claimed_by="host:1", stale_before=long_ago
        )
        assert sorted(e.id for e in held) == ids[:2]


def test_a_death_counts_at_every_row_its_worker_held_a_retry_at_none(sessions: Sessions) -> None:
    """The database decides what is an attempt, not the message: a worker that died counts
    once at each row it held, batch-mates included (counting it at the own row only let a
    split batch give a mate back with that death uncounted: stop 26's CI); a task that let
    go for a Celery retry (``leases.hold``) counts none, keeps its rows leased while the
    retry waits (a keeper counted one attempt per take-over: a share outage of minutes
    failed innocent films) and takes no new batch-mates on the retry (its batch grew)."""
    ids = [add(sessions, n) for n in range(1, 5)]
    long_ago = utcnow() - timedelta(hours=1)

    def claim_as(token: str, entry_id: int, **options: object) -> list[int]:
        keywords = {"batch_size": 3, "claimed_by": "node-a:1", "stale_before": long_ago}
        with sessions.begin() as session:
            held = claim(session, entry_id, token, **{**keywords, **options})  # type: ignore[arg-type]
            return [e.id for e in held]

    def attempts() -> dict[int, int]:
        with sessions() as session:
            return {e.id: e.attempts for e in session.query(WorklistEntry)}

    assert claim_as("task-a", ids[0]) == ids[:3]
    assert attempts() == {ids[0]: 1, ids[1]: 1, ids[2]: 1, ids[3]: 0}
    with sessions.begin() as session:  # a share error: retried in 5 minutes
        assert leases.hold(session, "task-a", utcnow() + timedelta(minutes=5)) == 3
    with sessions.begin() as session:  # the task still runs while it sends its retry
        assert leases.renew(session, {"task-a"}, utcnow() + timedelta(seconds=20)) == 0
    with sessions() as session:  # a lease keeper looking meanwhile takes nothing
        assert leases.expired(session, utcnow() + timedelta(minutes=4)) == []
    assert claim_as("task-a", ids[0], retry=True, batch_size=4) == ids[:3]  # not ids[3]
    assert attempts() == {ids[0]: 1, ids[1]: 1, ids[2]: 1, ids[3]: 0}
    # its worker died during the retry: the retried message is redelivered
    assert claim_as("task-a", ids[0], retry=True, lease_s=60) == ids[:3]
    assert attempts() == {ids[0]: 2, ids[1]: 2, ids[2]: 2, ids[3]: 0}
    with sessions() as session:  # every row it holds leased anew, batch-mates too
        assert leases.expired(session, utcnow() + timedelta(seconds=30)) == []
    # the split gives the mates back with the redelivery's claim uncounted, the death counted,
    # and a time to be sent again should their own tasks be lost
    resend_at = utcnow() + timedelta(minutes=15)
    with sessions.begin() as session:
        assert sorted(release(session, ids[1:3], "task-a", resend_at)) == ids[1:3]
    assert attempts() == {ids[0]: 2, ids[1]: 1, ids[2]: 1, ids[3]: 0}
    with sessions() as session:
        assert set(ids[1:3]).isdisjoint(leases.expired(session, resend_at - timedelta(seconds=1)))
        assert set(ids[1:3]) <= set(leases.expired(session, resend_at + timedelta(seconds=1)))
    # a redelivery whose first run never let go counts too (no retry flag needed)
    assert claim_as("task-d", ids[3]) == [ids[3]]
    assert claim_as("task-d", ids[3]) == [ids[3]]
    assert attempts()[ids[3]] == 2


def test_a_row_let_go_for_a_retry_that_came_late_is_taken_over_uncounted(
    sessions: Sessions,
) -> None:
    """A retry can come after its hold ran out (RabbitMQ's delayed delivery puts it behind a
    backlog; the task gave up; its message was lost): the keeper's take-over then gives the
    let-go claim back, since no worker died reading the row. A dead holder's row counts."""
    let_go, died = add(sessions, 1), add(sessions, 2)
    for entry_id, token in ((let_go, "task-a"), (died, "task-b")):
        claim_autocommit(
            sessions, entry_id, token, batch_size=1, claimed_by="n:1", stale_before=utcnow()
        )
    later = utcnow() + timedelta(minutes=10)
    with sessions.begin() as session:
        leases.hold(session, "task-a", utcnow() + timedelta(seconds=30))
        assert leases.requeue(session, [let_go, died], later, later) == [let_go, died]
    for entry_id in (let_go, died):  # the tasks the keeper sent
        claim_autocommit(
            sessions,
            entry_id,
            f"sent-{entry_id}",
            batch_size=1,
            claimed_by="n:2",
            stale_before=utcnow(),
        )
    with sessions() as session:
        assert {e.id: e.attempts for e in session.query(WorklistEntry)} == {let_go: 1, died: 2}


def test_a_claim_is_taken_over_when_its_lease_expired_not_before(sessions: Sessions) -> None:
    entry_id = add(sessions, 1)
    later = utcnow() + timedelta(1)
    with sessions.begin() as session:
        claim(
            session,
            entry_id,
            "live-task",
            batch_size=1,
            claimed_by="host:1",
            stale_before=utcnow(),
            lease_s=60,
        )
    with sessions.begin() as session:  # started long "ago", but its lease is alive
        assert (
            claim(
                session, entry_id, "new-task", batch_size=1, claimed_by="host:1", stale_before=later
            )
            == []
        )
    with sessions.begin() as session:  # its node dies: the lease runs out
        session.get_one(WorklistEntry, entry_id).lease_expires_at = utcnow() - timedelta(1)
    with sessions.begin() as session:
        held = claim(
            session, entry_id, "new-task", batch_size=1, stale_before=utcnow(), claimed_by="h:2"
        )
        assert [(e.claim_token, e.claimed_by) for e in held] == [("new-task", "h:2")]
        assert held[0].attempts == 2
        assert held[0].lease_expires_at is not None and held[0].lease_expires_at > utcnow()


def _statements(engine: Engine, cached: list[bool] | None = None) -> list[str]:
    """Every statement the engine sends from now on (executemany once), by its first word;
    ``cached`` gets whether each was compiled before (SQLAlchemy's statement cache)."""
    sent: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        sent.append(statement.split()[0] + (" many" if executemany else ""))
        if cached is not None:
            cached.append(context.cache_hit is CacheStats.CACHE_HIT)

    event.listen(engine, "before_cursor_execute", count)
    return sent


def test_a_burst_admits_with_one_cached_statement_whatever_its_size(
    sessions: Sessions, engine: Engine
) -> None:
    """Bursts of 3, 5 and 2 new files (some with UIDs, some without): one INSERT each, the
    same statement from SQLAlchemy's cache (a ``.values([...])`` of N rows is compiled anew
    for every burst)."""
    with sessions.begin() as session:
        admit_many(session, [arrival(n) for n in (1, 2, 3)])
    cached: list[bool] = []
    sent = _statements(engine, cached)
    for numbers in ((4, 5, 6, 7, 8), (9, 10)):
        with sessions.begin() as session:
            batch = [arrival(n, sop_instance_uid=f"1.2.{n}" if n % 2 else None) for n in numbers]
            assert all(created for _, created in admit_many(session, batch))
    assert cached == [True, True]
    assert sent == ["INSERT many", "INSERT many"]  # one statement per burst
    with sessions() as session:
        assert session.query(WorklistEntry).count() == 10


def test_record_final_stores_what_each_kind_stores_for_the_rows_the_token_holds(
    sessions: Sessions, engine: Engine
) -> None:
    ids = [add(sessions, n) for n in range(1, 6)]
    long_ago = utcnow() - timedelta(hours=1)
    with sessions.begin() as session:  # the task holds all five
        claim(session, ids, "task-a", batch_size=5, claimed_by="host:1", stale_before=long_ago)
    with sessions.begin() as session:  # ids[4] was taken over meanwhile (lease expired)
        session.execute(text(f"UPDATE worklist SET claim_token = 'task-b' WHERE id = {ids[4]}"))
    scored = ScoreValues(0.91, "pneumonia", "urgent", 0, 0.5, "m1", ("b", "a", "b"))
    finals = [
        Final(ids[0], Status.DONE, "/archive/0", scored),
        Final(ids[1], Status.REJECTED, "/q/lateral", reason="lateral_view", detail="lateral"),
        Final(ids[2], Status.DONE, "/archive/2", scored),
        Final(ids[3], Status.FAILED, "", reason="processing_error", detail="left"),
        Final(ids[4], Status.DONE, "/archive/4", scored),
    ]
    sent = _statements(engine)
    with sessions.begin() as session:
        assert record_final(session, "task-a", finals) == ids[:4]
    assert sent[:2] == ["UPDATE many", "UPDATE many"]  # one per kind; SELECT: the take-over
    with sessions() as session:
        rows = {e.id: e for e in session.query(WorklistEntry)}
    assert [rows[i].status for i in ids] == [
        Status.DONE,
        Status.REJECTED,
        Status.DONE,
        Status.FAILED,
        Status.PROCESSING,  # task-b's: untouched
    ]
    done = rows[ids[0]]
    assert (done.probability, done.label, done.priority, done.priority_rank) == (
        0.91,
        "pneumonia",
        "urgent",
        0,
    )
    assert (done.threshold, done.model_version, done.flags) == (0.5, "m1", "a,b")
    assert (done.archived_path, done.reason, done.reason_detail) == ("/archive/0", None, None)
    rejected = rows[ids[1]]
    assert (rejected.reason, rejected.reason_detail, rejected.archived_path) == (
        "lateral_view",
        "lateral",
        "/q/lateral",
    )
    assert rejected.probability is None and rows[ids[3]].archived_path == ""
    assert all(rows[i].finished_at is not None for i in ids[:4])
    assert rows[ids[4]].finished_at is None and rows[ids[4]].probability is None
    with sessions.begin() as session:  # a second store (a duplicate run): nothing is held
        assert record_final(session, "task-a", finals) == []


def test_a_batch_still_held_is_recorded_with_one_statement(
    sessions: Sessions, engine: Engine
) -> None:
    ids = [add(sessions, n) for n in range(1, 5)]
    claim_autocommit(
        sessions, ids, "task-a", batch_size=4, claimed_by="host:1", stale_before=utcnow()
    )
    scored = ScoreValues(0.2, "normal", "routine", 2, 0.5, "m1")
    sent = _statements(engine)
    with sessions.begin() as session:
        finals = [Final(i, Status.DONE, f"/archive/{i}", scored) for i in ids]
        assert record_final(session, "task-a", finals) == ids
    assert sent == ["UPDATE many"]  # every row matched: no SELECT to find which
    with sessions() as session:
        assert {e.status for e in session.query(WorklistEntry)} == {Status.DONE}


def test_a_final_row_is_one_of_the_final_kinds_with_what_it_needs() -> None:
    scored = ScoreValues(0.91, "pneumonia", "urgent", 0, 0.5, "m1")
    with pytest.raises(ValueError, match="not a final status"):
        Final(1, Status.PROCESSING, "")
    with pytest.raises(ValueError, match="done, and only then"):
        Final(1, Status.DONE, "/a")
    with pytest.raises(ValueError, match="done, and only then"):
        Final(1, Status.FAILED, "/q", scored, reason="processing_error")
    with pytest.raises(ValueError, match="needs a reason"):
        Final(1, Status.REJECTED, "/q")


def test_a_first_claim_of_a_full_batch_is_one_statement(sessions: Sessions, engine: Engine) -> None:
    ids = [add(sessions, n) for n in range(1, 5)]
    sent = _statements(engine)
    held = claim_autocommit(
        sessions, ids, "task-a", batch_size=4, claimed_by="host:1", stale_before=utcnow()
    )
    assert [e.id for e in held] == ids
    assert sent == ["UPDATE"]  # the rows come back with it: no SELECT


def test_reading_order_is_tier_then_arrival_never_probability(sessions: Sessions) -> None:
    """The rule of db/reading.py (tested there in depth), through the row-wise wrapper: the
    newer 0.99 urgent case never overtakes the older 0.97 one; a film the content check
    refused is read with SUSPECT, before any ROUTINE; a lateral is listed apart, after."""
    ids = [add(sessions, n) for n in range(1, 8)]
    score(sessions, ids[0], 0.30, 2)
    score(sessions, ids[1], 0.97, 0)
    score(sessions, ids[2], 0.60, 1)
    score(sessions, ids[3], 0.99, 0)
    score(sessions, ids[4], 0.60, 1)
    for n, reason in ((5, "lateral_view"), (6, "not_chest_radiograph")):
        with sessions.begin() as session:
            entry = session.get(WorklistEntry, ids[n])
            assert entry is not None
            record_unscored(session, entry, Status.REJECTED, reason, reason, "/q/x")
    with sessions() as session:
        order = [e.id for e in reading_order(session)]
    assert order == [ids[1], ids[3], ids[2], ids[4], ids[6], ids[0], ids[5]]


def test_filters_and_reviewed_rows(sessions: Sessions) -> None:
    a = add(sessions, 1, patient_id="P1", accession_number="ACC1")
    b = add(sessions, 2, patient_id="P2", accession_number="ACC2")
    score(sessions, a, 0.9, 0)
    with sessions() as session:
        assert [e.id for e in reading_order(session, statuses=[Status.QUEUED])] == [b]
        assert [e.id for e in reading_order(session, patient_id="P1")] == [a]
        assert [e.id for e in reading_order(session, accession_number="ACC2")] == [b]
        assert reading_order(session, since=utcnow() + timedelta(minutes=1)) == []
        assert len(reading_order(session, until=utcnow() + timedelta(minutes=1))) == 2
        assert len(reading_order(session, limit=1)) == 1
    with sessions.begin() as session:
        entry = review(session, a, ReviewDecision.AGREE, "dr-x")
        assert entry.reviewed_at is not None and entry.reviewed_at.tzinfo is not None
    with sessions() as session:
        assert [e.id for e in reading_order(session)] == [b]
        assert {e.id for e in reading_order(session, include_reviewed=True)} == {a, b}


def test_review_of_unknown_row_raises(sessions: Sessions) -> None:
    with sessions.begin() as session, pytest.raises(LookupError):
        review(session, 12345, ReviewDecision.ACKNOWLEDGED, "dr-x")


def test_counts_and_oldest_waiting(sessions: Sessions) -> None:
    ids = [add(sessions, n) for n in range(1, 4)]
    score(sessions, ids[0], 0.1, 2)
    with sessions() as session:
        counts = counts_by_status(session)
        assert counts[Status.QUEUED] == 2 and counts[Status.DONE] == 1
        assert counts[Status.FAILED] == 0
        oldest = oldest_waiting(session)
        assert oldest is not None and oldest.id == ids[1]


def test_the_database_refuses_an_unknown_status(sessions: Sessions) -> None:
    add(sessions, 1)
    with pytest.raises(IntegrityError), sessions.begin() as session:
        session.execute(text("UPDATE worklist SET status = 'lost'"))


def test_label_priority_and_source_kind_are_stored_as_their_strings_read_as_enums(
    sessions: Sessions,
) -> None:
    entry_id = add(sessions, 1, source_kind="dicom")
    score(sessions, entry_id, 0.9, 0)
    with sessions() as session:
        stored = session.execute(
            text("SELECT label, priority, source_kind FROM worklist WHERE id = :id"),
            {"id": entry_id},
        ).one()
        entry = session.get(WorklistEntry, entry_id)
    assert tuple(stored) == ("pneumonia", "urgent", "dicom")  # the strings of before
    assert entry is not None
    assert entry.label is Label.PNEUMONIA
    assert entry.priority is Priority.URGENT
    assert entry.source_kind is SourceKind.DICOM


def test_a_value_no_enum_knows_is_refused_when_written_kept_when_read(
    sessions: Sessions,
) -> None:
    entry_id = add(sessions, 1)
    with pytest.raises(StatementError, match="not a valid Priority"), sessions.begin() as s:
        s.execute(update(WorklistEntry).values(priority="critical"))
    with sessions.begin() as session:  # a newer version's priority, in the table already
        session.execute(text("UPDATE worklist SET priority = 'critical'"))
    with sessions() as session:
        entry = session.get(WorklistEntry, entry_id)
        assert entry is not None and entry.priority == "critical"


def test_time_filters_accept_relative_and_iso_values_and_name_a_bad_one() -> None:
    from datetime import UTC, datetime, timedelta

    from db.models import utcnow
    from db.worklist import parse_when

    assert abs(utcnow() - timedelta(minutes=30) - parse_when("30m")) < timedelta(seconds=5)
    assert parse_when("2026-01-31") == datetime(2026, 1, 31, tzinfo=UTC)
    with pytest.raises(ValueError, match="'yesterday'"):
        parse_when("yesterday")


def test_concurrent_tasks_claiming_outside_transactions_take_every_row_once(
    sessions: Sessions,
) -> None:
    ids = [add(sessions, n) for n in range(1, 201)]
    held: dict[str, list[int]] = {}

    def task(token: str, entry_ids: list[int]) -> None:
        long_ago = utcnow() - timedelta(hours=1)  # no claim here is stale
        for entry_id in entry_ids:
            rows = claim_autocommit(
                sessions,
                entry_id,
                f"{token}-{entry_id}",
                batch_size=4,
                claimed_by="host:1",
                stale_before=long_ago,
            )
            held[f"{token}-{entry_id}"] = [row.id for row in rows]

    # four workers race through every message (duplicate deliveries included), each from
    # another starting point, as a burst's tasks reach pool processes on several machines
    threads = [
        threading.Thread(target=task, args=(f"w{n}", ids[n * 50 :] + ids[: n * 50]))
        for n in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    claimed = [entry_id for rows in held.values() for entry_id in rows]
    assert sorted(claimed) == ids  # every row exactly once
    assert all(len(rows) <= 4 for rows in held.values())
    with sessions() as session:
        rows = session.query(WorklistEntry).all()
    assert {row.status for row in rows} == {Status.PROCESSING}
    assert {row.attempts for row in rows} == {1}


def test_claiming_a_batch_takes_its_free_rows_first_then_tops_up(sessions: Sessions) -> None:
    ids = [add(sessions, n) for n in range(1, 8)]
    long_ago = utcnow() - timedelta(hours=1)
    with sessions.begin() as session:  # another task holds one row of the batch
        claim(session, ids[4], "task-b", batch_size=1, claimed_by="host:1", stale_before=long_ago)
    with sessions.begin() as session:
        held = claim(
            session, ids[3:6], "task-a", batch_size=4, claimed_by="host:1", stale_before=long_ago
        )
        # its free rows (3, 5), then the oldest queued rows up to the batch size
        assert [e.id for e in held] == [ids[3], ids[5], ids[0], ids[1]]
    with sessions.begin() as session:  # every row of the batch is held: a no-op
        assert (
            claim(
                session,
                [ids[4], ids[5]],
                "task-c",
                batch_size=4,
                claimed_by="host:1",
                stale_before=long_ago,
            )
            == []
        )


def test_concurrent_batched_tasks_take_every_row_once(sessions: Sessions) -> None:
    """The race test with one message per admitted batch of 8 rows, delivered twice."""
    ids = [add(sessions, n) for n in range(1, 201)]
    batches = [ids[i : i + 8] for i in range(0, len(ids), 8)]
    held: dict[str, list[int]] = {}

    def task(order: list[int]) -> None:
        long_ago = utcnow() - timedelta(hours=1)
        for index in order:  # the token is the message's: a duplicate delivery shares it
            token = f"message-{index}"
            rows = claim_autocommit(
                sessions,
                batches[index],
                token,
                batch_size=8,
                claimed_by="host:1",
                stale_before=long_ago,
            )
            held.setdefault(token, []).extend(row.id for row in rows)

    count = len(batches)
    orders = [list(range(count)), list(reversed(range(count)))]
    orders += [[(i * 7 + n) % count for i in range(count)] for n in (3, 11)]
    threads = [threading.Thread(target=task, args=(order,)) for order in orders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    owner: dict[int, set[str]] = {}
    for token, rows in held.items():
        for entry_id in rows:
            owner.setdefault(entry_id, set()).add(token)
    assert sorted(owner) == ids  # every row claimed
    assert all(len(tokens) == 1 for tokens in owner.values())  # by exactly one task
    with sessions() as session:
        rows = session.query(WorklistEntry).all()
    assert all(r.status == Status.PROCESSING and r.attempts >= 1 for r in rows)
