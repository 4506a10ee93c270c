"""The results' delivery loop: pending SR/SC objects to the PACS, each stored once.

It runs apart from triage (a thread of ``cxr-triage run``, or its own ``cxr-triage deliver``
process), so a PACS that is down or hangs delays results, never a score. Its state is the
``result_objects`` table (:mod:`db.results`), so nothing is lost across restarts:

- every pass claims up to ``batch_size`` due objects (urgent rows first) with a token of its
  own and a short lease (``claim_lease``, renewed by a keeper thread while the batch is in
  flight), and sends them over **one** association. A deliverer that dies (killed, its host
  lost) stops renewing: its objects are due again when the lease runs out, well within a
  minute, and the token keeps it from recording anything once another deliverer has them;
- stored (Success, a warning, or "duplicate instance": the PACS has it): ``stored``, never
  sent again;
- a **temporary** problem (PACS unreachable or hung, a transient association rejection,
  0xA7xx out of resources, no response; :mod:`pacs.statuses`): ``pending`` again after an
  exponential backoff (``backoff_start_s`` doubling up to ``backoff_max_s``) for as long as
  ``give_up_after`` from the start of the object's schedule (hours: an outage of a night or
  a weekend needs no operator), then ``failed`` (``retries_exhausted``);
- a **permanent** refusal (0xA9xx, 0xCxxx, 0x0122 SOP Class not supported..., or the
  association rejected permanently: an AE title the PACS does not know): ``failed`` at once
  (``refused_by_pacs`` / ``association_rejected``), the answer in words;
- a file that is gone or cannot be read (empty, truncated, replaced): ``failed`` on its own
  (``file_missing`` / ``unreadable_file``); its batch-mates are sent;
- stored files older than ``retention`` are deleted from the outbox (the row stays).

The loop is the same for every destination: what it sends (``kinds``) and how (``node``, a
:class:`Destination`: the PACS's :class:`pacs.store.PacsNode`, or a RIS sender of
:mod:`ris`) are its parameters, so the RIS messages get the same states, attempts, claims
and give-up schedule as the SR and SC. With ``DeliveryPolicy.drain_in_order`` (the RIS
deliverers), a destination that was unreachable is retried as a whole every few seconds
(``reconnect_max_s`` at most) rather than object by object, and once it answers again the
whole backlog is sent in priority order, urgent first, whatever its objects' backoffs say.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from db import results as tracked
from db.holders import holder_id
from db.models import DICOM_KINDS, ResultKind, ResultObject, WorklistEntry, utcnow
from pacs.store import (
    BatchResult,
    Outgoing,
    PacsNode,
    Refused,
    StoreError,
    StorePriority,
    store_batch,
)

log = logging.getLogger(__name__)

#: ``result_objects.reason`` values set here.
REFUSED = "refused_by_pacs"  # a permanent failure status, or no context for the SOP Class
ASSOCIATION_REJECTED = "association_rejected"  # a permanent A-ASSOCIATE-RJ
#: The same two for a RIS destination (ris/): a message it refused for good (an AE, an AR
#: 200-203, an HTTP 4xx), and a connection it will not take (FHIR 401/403).
REFUSED_BY_RIS = "refused_by_ris"
RIS_REJECTED = "rejected_by_ris"
RETRIES_EXHAUSTED = "retries_exhausted"  # temporary failures for longer than give_up_after
FILE_MISSING = "file_missing"
UNREADABLE = "unreadable_file"
PRUNE_EVERY = timedelta(minutes=10)


class Destination(Protocol):
    """Where a deliverer sends: one connection (association) per batch, items in order.

    ``send_batch`` raises :class:`pacs.store.StoreError` when no connection is made (its
    ``permanent`` says whether a retry can help) and reports every item otherwise:
    ``stored``, ``refused`` (temporary or permanent), ``unsent`` (the connection ended
    early) or ``unreadable`` (never sent). ``str()`` names it for operators, without
    patient data.
    """

    def send_batch(self, items: Sequence[Outgoing]) -> BatchResult: ...


@dataclass(frozen=True)
class DeliveryPolicy:
    """How the loop sends, retries, holds its claims and prunes."""

    batch_size: int = 32
    backoff_start_s: float = 2.0
    backoff_max_s: float = 300.0
    #: Temporary failures are retried this long after an object's schedule began.
    give_up_after: timedelta = timedelta(hours=72)
    #: A claim's lease, renewed every third of it while its batch is in flight.
    claim_lease: timedelta = timedelta(seconds=30)
    retention: timedelta = timedelta(hours=72)
    poll_s: float = 1.0
    #: After a connection failure, retry the destination as a whole (every ``backoff_start_s``
    #: doubling up to ``reconnect_max_s``) and drain the backlog urgent first once it answers.
    drain_in_order: bool = False
    reconnect_max_s: float = 10.0

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if not 0 < self.backoff_start_s <= self.backoff_max_s:
            raise ValueError("need 0 < backoff_start_s <= backoff_max_s")
        if self.give_up_after <= timedelta(0) or self.claim_lease < timedelta(seconds=3):
            raise ValueError("give_up_after must be positive and claim_lease at least 3 s")
        if self.reconnect_max_s <= 0:
            raise ValueError("reconnect_max_s must be positive")

    def backoff(self, attempts: int) -> timedelta:
        """The wait after the ``attempts``-th unsuccessful attempt (1, 2, ...)."""
        seconds = self.backoff_start_s * 2 ** min(max(attempts - 1, 0), 30)
        return timedelta(seconds=min(seconds, self.backoff_max_s))


@dataclass
class PassReport:
    """What one delivery pass did (counts of objects)."""

    stored: int = 0
    retrying: int = 0
    failed: int = 0
    error: str | None = None  # the association-level problem, when there was one

    @property
    def attempted(self) -> int:
        return self.stored + self.retrying + self.failed


@dataclass
class Deliverer:
    """Sends due objects of ``kinds`` to ``node``; ``observe`` counts outcomes (stored,
    retrying, failed)."""

    sessions: sessionmaker[Session]
    node: PacsNode | Destination
    policy: DeliveryPolicy = field(default_factory=DeliveryPolicy)
    observe: Callable[[str, int], None] = lambda outcome, count: None
    clock: Callable[[], datetime] = utcnow
    holder: str = field(default_factory=holder_id)
    kinds: tuple[ResultKind, ...] = DICOM_KINDS
    #: drain_in_order: since when the destination is unreachable, and when to try it again.
    _down_since: datetime | None = field(default=None, init=False, repr=False)
    _retry_at: datetime | None = field(default=None, init=False, repr=False)
    _down_passes: int = field(default=0, init=False, repr=False)

    def deliver_once(self) -> PassReport:
        """Claim one batch of due objects and send it over one association."""
        token = uuid.uuid4().hex
        now = self.clock()
        report = PassReport()
        draining = self._down_since is not None
        if draining and self._retry_at is not None and now < self._retry_at:
            report.error = f"{self.node}: unreachable; tried again at {self._retry_at:%H:%M:%S}"
            return report
        with self.sessions.begin() as session:
            batch = [
                _Claimed.of(row, session)
                for row in tracked.claim_due(
                    session,
                    now,
                    self.policy.batch_size,
                    self.policy.claim_lease,
                    token,
                    self.holder,
                    self.kinds,
                    waiting_too=draining,
                )
            ]
        if not batch:
            self._down_since = self._retry_at = None  # nothing left to wait for
            return report
        with self._keeping(token):
            outgoing = [Outgoing(i.path, i.priority, i.sop_instance_uid) for i in batch]
            try:
                result: BatchResult | StoreError = self._send(outgoing)
            except StoreError as error:
                result = error
            except Exception as error:  # a bug must not strand the batch claimed
                log.exception("results: sending a batch failed")
                result = StoreError(f"{self.node}: sending failed ({type(error).__name__})")
        self._record(token, batch, result, report)
        if self.policy.drain_in_order:
            self._follow_outage(result)
        for outcome in ("stored", "retrying", "failed"):
            self.observe(outcome, getattr(report, outcome))
        return report

    @property
    def _rejected(self) -> str:
        return ASSOCIATION_REJECTED if isinstance(self.node, PacsNode) else RIS_REJECTED

    @property
    def _refused_reason(self) -> str:
        return REFUSED if isinstance(self.node, PacsNode) else REFUSED_BY_RIS

    def _send(self, outgoing: list[Outgoing]) -> BatchResult:
        if isinstance(self.node, PacsNode):
            return store_batch(outgoing, self.node)
        return self.node.send_batch(outgoing)

    def _follow_outage(self, result: BatchResult | StoreError) -> None:
        """drain_in_order: a batch that found the destination unreachable (or lost the
        connection) starts or extends an outage; the first one that got through ends it and
        makes every waiting object due, so the backlog goes out in priority order."""
        now = self.clock()
        lost = (isinstance(result, StoreError) and not result.permanent) or (
            isinstance(result, BatchResult) and bool(result.unsent)
        )
        if lost:
            if self._down_since is None:
                self._down_since, self._down_passes = now, 0
                log.warning("results: %s unreachable; its backlog waits, urgent first", self.node)
            self._down_passes += 1
            wait = min(
                self.policy.backoff_start_s * 2 ** min(self._down_passes - 1, 20),
                self.policy.reconnect_max_s,
            )
            self._retry_at = now + timedelta(seconds=wait)
            return
        if self._down_since is not None:
            with self.sessions.begin() as session:
                waiting = tracked.release_waiting(session, now, self.kinds)
            seconds = (now - self._down_since).total_seconds()
            log.info(
                "results: %s answers again after %.0f s; %d waiting object(s) due now",
                self.node,
                seconds,
                waiting,
            )
        self._down_since = self._retry_at = None

    def _record(
        self,
        token: str,
        batch: list[_Claimed],
        result: BatchResult | StoreError,
        report: PassReport,
    ) -> None:
        by_path = {item.path: item for item in batch}
        now = self.clock()
        with self.sessions.begin() as session:
            if isinstance(result, StoreError):
                report.error = str(result)
                log.warning("results: %s; %d object(s) affected", result, len(batch))
                for item in batch:
                    if result.permanent:
                        self._fail(session, token, item, now, str(result), self._rejected)
                        report.failed += 1
                    elif self._retry(session, token, item, now, str(result)):
                        report.retrying += 1
                    else:
                        report.failed += 1
                return
            stored = [by_path[s.path].object_id for s in result.stored]
            report.stored += tracked.mark_stored(session, stored, now, token)
            for unreadable in result.unreadable:
                item = by_path[unreadable.path]
                missing = not item.path.is_file()
                reason = FILE_MISSING if missing else UNREADABLE
                self._fail(session, token, item, now, str(unreadable), reason)
                report.failed += 1
            for refused in result.refused:
                item = by_path[refused.path]
                if self._refused(session, token, item, now, refused):
                    report.retrying += 1
                else:
                    report.failed += 1
            for path in result.unsent:  # the association ended early: due again now
                ended = "association ended early"
                tracked.mark_attempt(session, by_path[path].object_id, now, ended, now, token=token)
                report.retrying += 1

    def _refused(
        self, session: Session, token: str, item: _Claimed, now: datetime, refused: Refused
    ) -> bool:
        """Record a refusal; True when the object will be tried again."""
        words = f"{self.node} {refused}"
        if refused.permanent:
            self._fail(session, token, item, now, words, self._refused_reason)
            return False
        return self._retry(session, token, item, now, words)

    def _fail(
        self, session: Session, token: str, item: _Claimed, now: datetime, words: str, reason: str
    ) -> None:
        if tracked.mark_attempt(session, item.object_id, now, words, None, reason, token):
            log.warning("results: object %d failed (%s): %s", item.object_id, reason, words)

    def _retry(
        self, session: Session, token: str, item: _Claimed, now: datetime, words: str
    ) -> bool:
        """Due again after the backoff, unless the schedule's give-up time has passed (then
        ``failed``); a last try is made at the give-up time itself. True when retried."""
        started = item.schedule_started_at or now
        give_up_at = started + self.policy.give_up_after
        if now >= give_up_at:
            hours = self.policy.give_up_after.total_seconds() / 3600
            words += f"; still not stored {hours:g} h after the first try"
            self._fail(session, token, item, now, words, RETRIES_EXHAUSTED)
            return False
        due = min(now + self.policy.backoff(item.attempts + 1), give_up_at)
        until = give_up_at.strftime("%Y-%m-%d %H:%M UTC")
        tracked.mark_attempt(
            session, item.object_id, now, f"{words}; retried until {until}", due, token=token
        )
        return True

    @contextlib.contextmanager
    def _keeping(self, token: str) -> Iterator[None]:
        """Renew the batch's lease every third of it until the batch is recorded."""
        stop = threading.Event()
        interval = self.policy.claim_lease.total_seconds() / 3

        def keep() -> None:
            while not stop.wait(interval):
                try:
                    with self.sessions.begin() as session:
                        tracked.renew_claims(session, token, self.clock() + self.policy.claim_lease)
                except Exception:  # noqa: BLE001  a missed renewal costs a duplicate send at worst
                    log.warning("results: could not renew the batch's claim; retrying")

        keeper = threading.Thread(target=keep, name="results-claim", daemon=True)
        keeper.start()
        try:
            yield
        finally:
            stop.set()
            keeper.join()

    def prune(self) -> int:
        """Delete the outbox files of objects stored longer ago than the retention."""
        cutoff = self.clock() - self.policy.retention
        pruned = 0
        with self.sessions.begin() as session:
            for row in tracked.prunable(session, cutoff, kinds=self.kinds):
                Path(row.path or "").unlink(missing_ok=True)
                row.path = None
                pruned += 1
        if pruned:
            log.info("results: pruned %d stored file(s) from the outbox", pruned)
        return pruned

    def run(self, stop: threading.Event, beat: Callable[[], None] = lambda: None) -> None:
        """Deliver until ``stop`` is set: batches back to back while objects are due, a
        ``poll_s`` pause when none is, pruning every ten minutes. A database outage is
        logged and retried; it never ends the loop. ``beat`` is called once per pass (the
        ``deliver`` service's heartbeat)."""
        last_prune: datetime | None = None
        while not stop.is_set():
            beat()
            try:
                report = self.deliver_once()
                if last_prune is None or self.clock() - last_prune >= PRUNE_EVERY:
                    self.prune()
                    last_prune = self.clock()
            except Exception:  # the loop must outlive any one failure (database down)
                log.exception("results delivery pass failed; retrying")
                report = PassReport()
            if report.attempted == 0 or report.error:
                stop.wait(self.policy.poll_s)


@dataclass(frozen=True)
class _Claimed:
    """A claimed object, detached from its session."""

    object_id: int
    path: Path
    attempts: int
    priority: StorePriority
    sop_instance_uid: str | None
    schedule_started_at: datetime | None

    @classmethod
    def of(cls, row: ResultObject, session: Session) -> _Claimed:
        entry = session.get(WorklistEntry, row.entry_id)
        urgent = entry is not None and entry.priority_rank == 0
        return cls(
            object_id=row.id,
            path=Path(row.path or ""),
            attempts=row.attempts,
            priority=StorePriority.HIGH if urgent else StorePriority.MEDIUM,
            sop_instance_uid=row.sop_instance_uid,
            schedule_started_at=row.schedule_started_at,
        )
