"""The lease keeper: a thread in every worker node that keeps its claims alive and takes
over the claims of dead nodes.

A claimed row carries a lease (``lease_expires_at``, :mod:`db.leases`). Every
``lease_s / 4`` seconds the keeper, in the node's main process:

1. renews the leases of the rows held by the tasks this node is running right now (Celery's
   own record of accepted requests, kept by the main process whatever the pool). A task that
   ended, whose pool process was killed, or whose node died is in no such record, so its
   rows stop being renewed;
2. takes over rows whose lease has expired: sends a task for them, then puts them back to
   ``queued`` without a claim token, so that exactly one later claim (that task, or a late
   redelivery of the original message) scores them, and the dead task can store nothing;
3. sends again the tasks of rows still ``queued`` when the broker holds no triage message at
   all (a broker restarted without persistence lost them), every third tick;
4. files staged originals whose row became final but whose move never happened (a crash
   between the database commit and the move; see :mod:`ingest.staging`).

With the defaults (a 20 s lease renewed every 5 s) the rows of a node killed outright are
back in another worker's hands within about 25 s, instead of the 15 to 30 minutes of the
re-hand and visibility timeouts. The main process of a prefork worker runs no model code, so
the keeper is never starved of the interpreter by a long decode; with the solo pool it
shares the process with the task, and a decode longer than the lease that holds the
interpreter costs at worst a duplicate attempt whose result is discarded (the claim token
decides who stores it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from db import leases
from db.models import FINAL_STATUSES, utcnow
from db.originals import file_original, stored_sidecar
from db.snapshot import RowSnapshot
from db.worklist import get_entries
from ingest.hashing import file_sha256
from ingest.staging import staging_dir, unstage
from worker.settings import Settings

log = logging.getLogger(__name__)

#: A final row's staged original is filed by the keeper only after this long, so that it
#: never races the task that is about to move it.
REFILE_GRACE_S = 60.0
#: Staging folder checks happen every this many ticks (a listing, and one query if needed).
REFILE_EVERY_TICKS = 6
#: Lost-message checks (a look at the broker's triage queues) every this many ticks.
LOST_CHECK_EVERY_TICKS = 3
#: A queued row is presumed lost only when its task was sent at least this long ago and the
#: broker holds no triage message at all: time for a message to travel and be reserved.
LOST_GRACE = timedelta(seconds=30)


@dataclass
class LeaseKeeper:
    settings: Settings
    sessions: sessionmaker[Session]
    running: Callable[[], Collection[str]]  # claim tokens of the tasks running here
    send: Callable[[Sequence[int]], None]  # tasks for these row ids, on the live queue
    #: Errors of ``send`` that mean the broker is down: logged without a traceback.
    outage: tuple[type[Exception], ...] = ()
    #: Whether the broker's triage queues hold a message (None: it cannot tell).
    triage_queued: Callable[[], bool | None] = lambda: None
    ticks: int = 0

    @property
    def interval_s(self) -> float:
        return self.settings.lease_s / 4

    def run(self, stop: threading.Event) -> None:
        """Tick until ``stop`` is set; a database or broker outage only skips ticks."""
        outages: tuple[type[Exception], ...] = (SQLAlchemyError, OSError, *self.outage)
        while not stop.wait(self.interval_s):
            try:
                self.tick()
            except outages as error:  # an outage: next tick
                log.warning(
                    "lease keeper: %s; retrying in %.0f s", type(error).__name__, self.interval_s
                )
            except Exception:  # the keeper must outlive anything; the next tick retries
                log.exception("lease keeper tick failed")

    def tick(self) -> list[int]:
        """Renew, take over, and now and then refile; returns the rows taken over."""
        self.renew()
        taken = self.take_over()
        if self.ticks % LOST_CHECK_EVERY_TICKS == 0:
            taken += self.resend_lost()
        if self.ticks % REFILE_EVERY_TICKS == 0:
            self.refile_staged()
        self.ticks += 1
        return taken

    def renew(self) -> int:
        tokens = self.running()
        if not tokens:
            return 0
        with self.sessions.begin() as session:
            return leases.renew(
                session, tokens, utcnow() + timedelta(seconds=self.settings.lease_s)
            )

    def take_over(self) -> list[int]:
        """Send a task for every expired claim, then requeue those rows.

        Sending first: if the broker is down nothing changes and the next tick tries again;
        if the database fails after the send, the task's claim still takes the expired row.
        """
        now = utcnow()
        with self.sessions() as session:
            expired = leases.expired(session, now)
        if not expired:
            return []
        self.send(expired)
        # Said once sent: the task sent may claim a row before the requeue below does (its
        # claim takes an expired row too), and the take-over happened all the same.
        log.warning(
            "took over %d row(s) whose claim expired (worker gone) or task was lost: %s",
            len(expired),
            ", ".join(map(str, expired)),
        )
        resend_at = now + timedelta(seconds=self.settings.requeue_after_s)
        with self.sessions.begin() as session:
            return leases.requeue(session, expired, now, resend_at)

    def resend_lost(self) -> list[int]:
        """Send again the tasks of queued rows when the broker holds no triage message at
        all: their messages were lost (a Redis restarted without persistence). Within about
        :data:`LOST_GRACE` of the loss instead of ``requeue_after_s``; a row whose message
        was only reserved by a worker gets a second message, which finds it claimed or
        final and does nothing (the claim token decides)."""
        now = utcnow()
        requeue_after = timedelta(seconds=self.settings.requeue_after_s)
        with self.sessions() as session:
            candidates = leases.lost(session, now, LOST_GRACE, requeue_after)
        if not candidates or self.triage_queued() is not False:
            return []  # nothing waits, messages are queued, or the broker cannot tell
        with self.sessions.begin() as session:
            resent = leases.mark_resent(session, candidates, now, LOST_GRACE, requeue_after)
        if resent:
            self.send(resent)
            log.warning(
                "the broker holds no triage task while %d row(s) wait: their tasks were lost; "
                "sent again: %s",
                len(resent),
                ", ".join(map(str, resent)),
            )
        return resent

    def refile_staged(self) -> int:
        """File the staged originals of rows that became final without their move."""
        folder = staging_dir(self.settings.inbox)
        try:
            ids = sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())
        except FileNotFoundError:
            return 0
        if not ids:
            return 0
        cutoff = utcnow() - timedelta(seconds=REFILE_GRACE_S)
        with self.sessions() as session:
            due = [
                RowSnapshot.of(entry)
                for entry in get_entries(session, ids)
                if entry.status in FINAL_STATUSES
                and entry.finished_at
                and entry.finished_at < cutoff
            ]
        filed = 0
        for row in due:
            try:
                self._refile(row, folder / str(row.id))
                filed += 1
            except FileNotFoundError:
                continue  # filed meanwhile by its task
            except (OSError, SQLAlchemyError) as error:
                log.warning("row %d: staged original not filed yet (%s)", row.id, error)
        return filed

    def _refile(self, row: RowSnapshot, staged: Path) -> None:
        if not row.archived_path:  # bytes that belong to no row: a new arrival
            unstage(staged, row.source)
            log.info("row %d: staged file put back into the inbox as a new arrival", row.id)
            return
        destination = Path(row.archived_path)
        if destination.exists() or destination.is_symlink():
            if destination.is_file() and file_sha256(destination) == file_sha256(staged):
                staged.unlink()  # an identical copy is filed already: nothing is lost
                log.info("row %d: staged copy of the filed original removed", row.id)
            else:  # other bytes than the filed original: never dropped, a new arrival
                unstage(staged, row.source)
                log.info("row %d: staged file put back into the inbox as a new arrival", row.id)
            return
        file_original(self.sessions, row.id, staged, destination, stored_sidecar(row))
        log.info("row %d: interrupted move of the original completed", row.id)


def start_keeper(
    settings: Settings,
    running: Callable[[], Collection[str]],
    send: Callable[[Sequence[int]], None],
    outage: tuple[type[Exception], ...] = (),
    triage_queued: Callable[[], bool | None] = lambda: None,
) -> threading.Event:
    """Start the keeper thread of this worker node (its main process); returns its stop.
    :mod:`worker.lifecycle` wires it to Celery's record of running tasks and to the broker."""
    from db.engine import make_engine, make_session_factory

    # An engine of its own: the pool's children never inherit a connection in use.
    sessions = make_session_factory(make_engine(settings.database_url))
    keeper = LeaseKeeper(settings, sessions, running, send, outage, triage_queued)
    stop = threading.Event()
    threading.Thread(target=keeper.run, args=(stop,), name="lease-keeper", daemon=True).start()
    log.info("lease keeper started (lease %.0f s)", settings.lease_s)
    return stop
