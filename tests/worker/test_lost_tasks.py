"""The lease keeper's lost-task check, on SQLite and PostgreSQL: queued rows are sent again
only when the broker holds no triage message, only once their last send is older than the
grace, and by exactly one of several worker nodes (the real process test:
tests/reliability/test_lost_messages.py)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from db import leases
from db.models import Status, WorklistEntry, utcnow
from db.worklist import Arrival, admit
from worker.lease_keeper import LOST_GRACE, LeaseKeeper
from worker.settings import Settings


def rows_at(sessions: sessionmaker[Session], **ages_s: float) -> dict[str, int]:
    """One queued row per name, received that many seconds ago."""
    ids = {}
    with sessions.begin() as session:
        for index, (name, age) in enumerate(ages_s.items()):
            entry, _ = admit(session, Arrival(f"{index:064d}", name, f"/inbox/{name}"))
            entry.received_at = utcnow() - timedelta(seconds=age)
            ids[name] = entry.id
    return ids


def keeper(settings: Settings, sessions, sent: list[list[int]], queued: bool | None) -> LeaseKeeper:
    return LeaseKeeper(
        settings,
        sessions,
        running=set,
        send=lambda ids: sent.append(list(ids)),
        triage_queued=lambda: queued,
    )


def test_only_rows_waiting_longer_than_the_grace_are_resent_and_only_when_the_queue_is_empty(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    ids = rows_at(sessions, old=120, fresh=5, resent=120, claimed=120)
    requeue_after = timedelta(seconds=settings.requeue_after_s)
    with sessions.begin() as session:
        session.execute(  # re-sent 10 s ago by the take-over: its lease says so
            update(WorklistEntry)
            .where(WorklistEntry.id == ids["resent"])
            .values(lease_expires_at=utcnow() + requeue_after - timedelta(seconds=10))
        )
        session.execute(
            update(WorklistEntry)
            .where(WorklistEntry.id == ids["claimed"])
            .values(status=Status.PROCESSING, claim_token="t")
        )
    sent: list[list[int]] = []
    assert keeper(settings, sessions, sent, queued=True).resend_lost() == []  # messages wait
    assert keeper(settings, sessions, sent, queued=None).resend_lost() == []  # cannot tell
    assert sent == []
    assert keeper(settings, sessions, sent, queued=False).resend_lost() == [ids["old"]]
    assert sent == [[ids["old"]]]
    # sent again just now: not again before the grace has passed
    assert keeper(settings, sessions, sent, queued=False).resend_lost() == []
    with sessions() as session:
        later = utcnow() + LOST_GRACE + timedelta(seconds=1)
        assert set(leases.lost(session, later, LOST_GRACE, requeue_after)) == {
            ids["old"],
            ids["fresh"],
            ids["resent"],
        }


def test_of_two_nodes_looking_at_once_exactly_one_resends_each_row(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    ids = rows_at(sessions, a=120, b=120)
    now = utcnow()
    requeue_after = timedelta(seconds=settings.requeue_after_s)
    with sessions() as session:
        seen = leases.lost(session, now, LOST_GRACE, requeue_after)
    assert sorted(seen) == sorted(ids.values())
    with sessions.begin() as session:
        first = leases.mark_resent(session, seen, now, LOST_GRACE, requeue_after)
    with sessions.begin() as session:
        second = leases.mark_resent(session, seen, now, LOST_GRACE, requeue_after)
    assert sorted(first) == sorted(ids.values()) and second == []
