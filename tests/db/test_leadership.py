"""The watcher's lease row on SQLite and PostgreSQL: one holder at a time, taken over only
once expired, released at once by a clean stop."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from db import leadership
from db.models import utcnow

LEASE = timedelta(seconds=15)


def _acquire(sessions: sessionmaker[Session], holder: str, at_s: float = 0) -> int | None:
    now = utcnow() + timedelta(seconds=at_s)
    with sessions.begin() as session:
        return leadership.acquire(session, "watcher", holder, now, now + LEASE)


def test_one_holder_at_a_time_and_a_new_term_on_each_hand_over(
    sessions: sessionmaker[Session],
) -> None:
    assert _acquire(sessions, "a") == 1
    assert _acquire(sessions, "b") is None, "a's lease runs"
    assert _acquire(sessions, "a") == 1, "the holder asking again keeps its term"
    assert _acquire(sessions, "b", at_s=16) == 2, "expired: b takes over in a new term"
    with sessions.begin() as session:
        assert not leadership.renew(session, "watcher", "a", utcnow(), utcnow() + LEASE)
        lease = leadership.current(session, "watcher")
        assert lease is not None and (lease.holder, lease.term) == ("b", 2)


def test_a_released_lease_is_taken_at_once(sessions: sessionmaker[Session]) -> None:
    assert _acquire(sessions, "a") == 1
    with sessions.begin() as session:
        assert not leadership.release(session, "watcher", "b", utcnow()), "not b's to release"
        assert leadership.release(session, "watcher", "a", utcnow())
    assert _acquire(sessions, "b") == 2


def test_renewal_keeps_the_lease_from_expiring(sessions: sessionmaker[Session]) -> None:
    assert _acquire(sessions, "a") == 1
    later = utcnow() + timedelta(seconds=10)
    with sessions.begin() as session:
        assert leadership.renew(session, "watcher", "a", later, later + LEASE)
    assert _acquire(sessions, "b", at_s=16) is None, "renewed at +10 s: runs to +25 s"
    assert _acquire(sessions, "b", at_s=26) == 2


def test_of_many_standbys_racing_for_an_expired_lease_exactly_one_wins(
    sessions: sessionmaker[Session],
) -> None:
    assert _acquire(sessions, "dead") == 1
    start = threading.Barrier(8)
    won: dict[str, int | None] = {}

    def race(name: str) -> None:
        start.wait()
        won[name] = _acquire(sessions, name, at_s=20)

    threads = [threading.Thread(target=race, args=(f"s{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = {name: term for name, term in won.items() if term is not None}
    assert list(winners.values()) == [2], won
    with sessions() as session:
        lease = leadership.current(session, "watcher")
        assert lease is not None and lease.holder in winners
