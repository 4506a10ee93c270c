"""One active watcher per share, any number of standbys: leadership by a lease row.

Every ``cxr-triage watch`` process runs :meth:`Leadership.run`. It stands by until it holds
the ``watcher`` lease (:mod:`db.leadership`), then runs the watcher in a thread while it
renews the lease every ``lease_s / 4``; a standby looks at the same pace, so a holder that
died (SIGKILL, a lost node) is replaced within ``lease_s`` plus one look.

The holder steps down, stopping its watcher before anyone else may start one, when:
- a renewal finds another holder (it was paused past its lease and replaced), or
- no renewal has succeeded for ``lease_s - lease_s / 4`` by its own monotonic clock (the
  database is unreachable: a standby may see the lease expire ``lease_s`` after the last
  renewal, so this holder has stopped a quarter of the lease before then).
A clean stop (SIGTERM) releases the lease at once, so a rolling update hands over in one look.

Two watchers overlapping for a moment (a clock skew larger than the margin) is safe, only
wasteful: admission is idempotent (one row per content hash, ``INSERT ... ON CONFLICT``)
and a file another watcher is admitting is seen as the same file, never as a duplicate.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from db import holders, leadership
from db.models import utcnow

log = logging.getLogger(__name__)

WATCHER = "watcher"


def holder_id() -> str:
    """``host:pid:random``: unique even for two containers whose main process is pid 1."""
    return f"{holders.holder_id()}:{secrets.token_hex(3)}"[:255]


class WorkFailedError(RuntimeError):
    """The work run under the lease ended by itself (it raised): the service must exit."""


@dataclass
class Leadership:
    sessions: sessionmaker[Session]
    lease_s: float
    name: str = WATCHER
    holder: str = field(default_factory=holder_id)
    clock: Callable[[], float] = time.monotonic
    term: int | None = None  # set while this process holds the lease

    @property
    def interval_s(self) -> float:
        return self.lease_s / 4

    def run(
        self,
        work: Callable[[threading.Event], None],
        stop: threading.Event,
        standby_beat: Callable[[], None] = lambda: None,
    ) -> None:
        """Stand by, lead, step down, stand by again... until ``stop``; then release.

        ``standby_beat`` is called at each look while standing by: a standby is alive and
        ready, and its health check must say so.

        ``work(term_stop)`` runs in a thread for each term and must return soon after
        ``term_stop`` is set. If it returns (or raises) by itself, the lease is released and
        :class:`WorkFailedError` raised: a watcher that died must not keep its share unwatched.
        """
        waiting_logged = False
        while not stop.is_set():
            asked_at = self.clock()
            term = self._acquire()
            if term is None:
                standby_beat()
                if not waiting_logged:
                    log.info("standby: another process runs the %s; ready to take over", self.name)
                    waiting_logged = True
                stop.wait(self.interval_s)
                continue
            waiting_logged = False
            self.term = term
            log.info("%s active here (term %d, lease %.0f s)", self.name, term, self.lease_s)
            try:
                self._lead(work, stop, asked_at)
            finally:
                self.term = None
        self._release()

    def _lead(
        self, work: Callable[[threading.Event], None], stop: threading.Event, renewed_at: float
    ) -> None:
        term_stop = threading.Event()
        failure: list[BaseException] = []

        def target() -> None:
            try:
                work(term_stop)
            except BaseException as error:  # reported by the leader loop below  # noqa: BLE001
                failure.append(error)

        thread = threading.Thread(target=target, name=self.name)
        thread.start()
        try:
            while not stop.wait(self.interval_s):
                if not thread.is_alive():
                    self._release()
                    raise WorkFailedError(f"the {self.name} stopped by itself") from (
                        failure[0] if failure else None
                    )
                asked_at = self.clock()
                renewed = self._renew()
                if renewed:
                    renewed_at = asked_at
                elif renewed is False:
                    log.warning("%s lease taken by another process; stepping down", self.name)
                    return
                if self.clock() - renewed_at >= self.lease_s - self.interval_s:
                    log.warning(
                        "%s lease not renewed for %.0f s (database unreachable); stepping down",
                        self.name,
                        self.clock() - renewed_at,
                    )
                    return
        finally:
            term_stop.set()
            thread.join()

    def _acquire(self) -> int | None:
        now = utcnow()
        try:
            with self.sessions.begin() as session:
                return leadership.acquire(
                    session, self.name, self.holder, now, now + timedelta(seconds=self.lease_s)
                )
        except SQLAlchemyError as error:
            log.warning("%s lease: database unreachable (%s)", self.name, type(error).__name__)
            return None

    def _renew(self) -> bool | None:
        """True renewed, False lost to another holder, None unknown (database error)."""
        now = utcnow()
        try:
            with self.sessions.begin() as session:
                return leadership.renew(
                    session, self.name, self.holder, now, now + timedelta(seconds=self.lease_s)
                )
        except SQLAlchemyError as error:
            log.warning("%s lease not renewed: %s", self.name, type(error).__name__)
            return None

    def _release(self) -> None:
        try:
            with self.sessions.begin() as session:
                if leadership.release(session, self.name, self.holder, utcnow()):
                    log.info("%s lease released", self.name)
        except SQLAlchemyError as error:  # it expires by itself
            log.warning("%s lease not released (%s)", self.name, type(error).__name__)
