"""Leadership in threads on SQLite and PostgreSQL: one active at a time, a standby takes
over when the active one stops or dies, and a holder whose lease was taken steps down."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from db.models import ServiceLease, utcnow
from tests.support import wait_until
from worker.leadership import Leadership, WorkFailedError

LEASE_S = 2.0  # looks every 0.5 s


class Service:
    """The work run under the lease: records who is active, and checks it is only one."""

    def __init__(self) -> None:
        self.active: set[str] = set()
        self.terms: list[str] = []
        self.overlap = False
        self.lock = threading.Lock()

    def work(self, name: str) -> object:
        def run(term_stop: threading.Event) -> None:
            with self.lock:
                self.overlap |= bool(self.active)
                self.active.add(name)
                self.terms.append(name)
            term_stop.wait()
            with self.lock:
                self.active.discard(name)

        return run


def _start(
    sessions: sessionmaker[Session], service: Service, name: str
) -> tuple[Leadership, threading.Event, threading.Thread]:
    leadership = Leadership(sessions, LEASE_S, holder=name)
    stop = threading.Event()
    thread = threading.Thread(target=leadership.run, args=(service.work(name), stop))
    thread.start()
    return leadership, stop, thread


def test_one_active_and_the_standby_takes_over_when_it_stops(
    sessions: sessionmaker[Session],
) -> None:
    service = Service()
    _, stop_a, thread_a = _start(sessions, service, "a")
    wait_until(lambda: service.active == {"a"}, 5, "a active")
    _, stop_b, thread_b = _start(sessions, service, "b")
    time.sleep(2 * LEASE_S)
    assert service.active == {"a"}, "b stands by while a renews"
    stop_a.set()  # a clean stop releases the lease: b needs one look, not a whole lease
    released = time.monotonic()
    thread_a.join(5)
    wait_until(lambda: service.active == {"b"}, 5, "b active")
    assert time.monotonic() - released < LEASE_S
    stop_b.set()
    thread_b.join(5)
    assert service.terms == ["a", "b"] and not service.overlap


def test_a_holder_whose_lease_was_taken_stops_its_work(sessions: sessionmaker[Session]) -> None:
    """A process paused past its lease (SIGSTOP, a VM migration) finds another holder at its
    next renewal and stops its watcher at once."""
    service = Service()
    leadership, stop, thread = _start(sessions, service, "a")
    wait_until(lambda: service.active == {"a"}, 5, "a active")
    with sessions.begin() as session:
        session.execute(
            update(ServiceLease).values(
                holder="intruder", term=ServiceLease.term + 1, expires_at=utcnow() + timedelta(60)
            )
        )
    wait_until(lambda: not service.active, 3, "a stepping down")
    assert leadership.term is None
    stop.set()
    thread.join(5)


def test_work_that_dies_releases_the_lease_and_ends_the_service(
    sessions: sessionmaker[Session],
) -> None:
    def crash(term_stop: threading.Event) -> None:
        raise OSError("the watcher broke")

    leadership = Leadership(sessions, LEASE_S, holder="a")
    with pytest.raises(WorkFailedError) as raised:
        leadership.run(crash, threading.Event())
    assert isinstance(raised.value.__cause__, OSError)
    service = Service()
    _, stop, thread = _start(sessions, service, "b")
    wait_until(lambda: service.active == {"b"}, 2, "b active at its first look")
    stop.set()
    thread.join(5)
