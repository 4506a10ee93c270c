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
3. files staged originals whose row became final but whose move never happened (a crash
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
from db.models import FINAL_STATUSES, Status, utcnow
from db.worklist import get_entries, get_entry
from ingest.filing import Sidecar, move_into_place, quarantine_file
from ingest.hashing import file_sha256
from ingest.staging import staging_dir, unstage
from worker.outcomes import row_sidecar
from worker.settings import Settings

log = logging.getLogger(__name__)

#: A final row's staged original is filed by the keeper only after this long, so that it
#: never races the task that is about to move it.
REFILE_GRACE_S = 60.0
#: Staging folder checks happen every this many ticks (a listing, and one query if needed).
REFILE_EVERY_TICKS = 6


@dataclass
class LeaseKeeper:
    settings: Settings
    sessions: sessionmaker[Session]
    running: Callable[[], Collection[str]]  # claim tokens of the tasks running here
    send: Callable[[Sequence[int]], None]  # tasks for these row ids, on the live queue
    #: Errors of ``send`` that mean the broker is down: logged without a traceback.
    outage: tuple[type[Exception], ...] = ()
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
        resend_at = now + timedelta(seconds=self.settings.requeue_after_s)
        with self.sessions.begin() as session:
            taken = leases.requeue(session, expired, now, resend_at)
        if taken:
            log.warning(
                "took over %d row(s) whose claim expired (worker gone) or task was lost: %s",
                len(taken),
                ", ".join(map(str, taken)),
            )
        return taken

    def refile_staged(self) -> int:
        """File the staged originals of rows that became final without their move."""
        folder = staging_dir(self.settings.inbox_dir)
        try:
            ids = sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())
        except FileNotFoundError:
            return 0
        if not ids:
            return 0
        cutoff = utcnow() - timedelta(seconds=REFILE_GRACE_S)
        with self.sessions() as session:
            due = [
                (
                    e.id,
                    e.archived_path,
                    e.source_path,
                    None if Status(e.status) is Status.DONE else row_sidecar(e),
                )
                for e in get_entries(session, ids)
                if e.status in FINAL_STATUSES and e.finished_at and e.finished_at < cutoff
            ]
        filed = 0
        for entry_id, archived_path, source_path, sidecar in due:
            staged = folder / str(entry_id)
            try:
                self._refile(entry_id, staged, archived_path, source_path, sidecar)
                filed += 1
            except FileNotFoundError:
                continue  # filed meanwhile by its task
            except (OSError, SQLAlchemyError) as error:
                log.warning("row %d: staged original not filed yet (%s)", entry_id, error)
        return filed

    def _refile(
        self,
        entry_id: int,
        staged: Path,
        archived_path: str | None,
        source_path: str,
        sidecar: Sidecar | None,  # None for a done row: its original goes to the archive
    ) -> None:
        if not archived_path:  # bytes that belong to no row: a new arrival
            unstage(staged, Path(source_path))
            log.info("row %d: staged file put back into the inbox as a new arrival", entry_id)
            return
        destination = Path(archived_path)
        if destination.exists() or destination.is_symlink():
            if destination.is_file() and file_sha256(destination) == file_sha256(staged):
                staged.unlink()  # an identical copy is filed already: nothing is lost
                log.info("row %d: staged copy of the filed original removed", entry_id)
            else:  # other bytes than the filed original: never dropped, a new arrival
                unstage(staged, Path(source_path))
                log.info("row %d: staged file put back into the inbox as a new arrival", entry_id)
            return
        if sidecar is None:
            final = move_into_place(staged, destination)
        else:
            final = quarantine_file(staged, destination, sidecar)
        if final != destination:
            with self.sessions.begin() as session:
                entry = get_entry(session, entry_id)
                if entry is not None:
                    entry.archived_path = str(final)
        log.info("row %d: interrupted move of the original completed", entry_id)


def start_keeper(
    settings: Settings,
    running: Callable[[], Collection[str]],
    send: Callable[[Sequence[int]], None],
    outage: tuple[type[Exception], ...] = (),
) -> threading.Event:
    """Start the keeper thread of this worker node (its main process); returns its stop.
    :mod:`worker.tasks` wires it to Celery's record of running tasks and to the broker."""
    from db.engine import make_engine, make_session_factory

    # An engine of its own: the pool's children never inherit a connection in use.
    sessions = make_session_factory(make_engine(settings.db_url))
    keeper = LeaseKeeper(settings, sessions, running, send, outage)
    stop = threading.Event()
    threading.Thread(target=keeper.run, args=(stop,), name="lease-keeper", daemon=True).start()
    log.info("lease keeper started (lease %.0f s)", settings.lease_s)
    return stop
