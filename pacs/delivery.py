"""The results' delivery loop: pending SR/SC objects to the PACS, each stored once.

It runs apart from triage (a thread of ``cxr-triage run``, or its own ``cxr-triage deliver``
process), so a PACS that is down or hangs delays results, never a score. Its state is the
``result_objects`` table (:mod:`db.results`), so nothing is lost across restarts:

- every pass takes up to ``batch_size`` due objects (urgent rows first) and sends them over
  **one** association;
- stored (Success or a warning status): ``stored``, never sent again;
- the PACS unreachable or refusing the association: every object of the batch stays
  ``pending``, due again after an exponential backoff (``backoff_start_s`` doubling up to
  ``backoff_max_s``), for as long as it takes: no operator is needed when the PACS comes back;
- an object the PACS answers with a failure status: retried with the same backoff, then
  ``failed`` (reason ``refused_by_pacs``) after ``max_refusals`` such answers;
- a file gone from the outbox: ``failed`` (reason ``file_missing``);
- stored files older than ``retention`` are deleted from the outbox (the row stays).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from db import results as tracked
from db.models import ResultObject, WorklistEntry, utcnow
from pacs.store import PacsNode, StoreError, StorePriority, store_batch

log = logging.getLogger(__name__)

REFUSED = "refused_by_pacs"
FILE_MISSING = "file_missing"
PRUNE_EVERY = timedelta(minutes=10)


@dataclass(frozen=True)
class DeliveryPolicy:
    """How the loop sends, retries and prunes."""

    batch_size: int = 32
    backoff_start_s: float = 2.0
    backoff_max_s: float = 300.0
    max_refusals: int = 5
    retention: timedelta = timedelta(hours=72)
    poll_s: float = 1.0

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_refusals < 1:
            raise ValueError("batch_size and max_refusals must be at least 1")
        if not 0 < self.backoff_start_s <= self.backoff_max_s:
            raise ValueError("need 0 < backoff_start_s <= backoff_max_s")

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
    """Sends due objects to ``node``; ``observe`` counts outcomes (stored, retrying, failed)."""

    sessions: sessionmaker[Session]
    node: PacsNode
    policy: DeliveryPolicy = field(default_factory=DeliveryPolicy)
    observe: Callable[[str, int], None] = lambda outcome, count: None
    clock: Callable[[], datetime] = utcnow

    def lease(self) -> timedelta:
        """Longer than the slowest batch: every object waiting the full timeout."""
        return timedelta(seconds=self.node.timeout_s * (self.policy.batch_size + 3))

    def deliver_once(self) -> PassReport:
        """Claim one batch of due objects and send it over one association."""
        now = self.clock()
        with self.sessions.begin() as session:
            batch = [
                _Claimed.of(row, session)
                for row in tracked.claim_due(session, now, self.policy.batch_size, self.lease())
            ]
        report = PassReport()
        if not batch:
            return report
        missing = [item for item in batch if not item.path.is_file()]
        present = [item for item in batch if item.path.is_file()]
        with self.sessions.begin() as session:
            for item in missing:
                tracked.mark_attempt(
                    session,
                    item.object_id,
                    now,
                    f"{item.path.name} is no longer in the outbox",
                    None,
                    FILE_MISSING,
                )
                report.failed += 1
        if present:
            self._send(present, report)
        for outcome in ("stored", "retrying", "failed"):
            self.observe(outcome, getattr(report, outcome))
        return report

    def _send(self, items: list[_Claimed], report: PassReport) -> None:
        by_path = {item.path: item for item in items}
        try:
            result = store_batch([(item.path, item.priority) for item in items], self.node)
        except (StoreError, OSError, ValueError) as error:
            report.error = str(error)
            log.warning("results: %s; %d object(s) wait for the next try", error, len(items))
            now = self.clock()
            with self.sessions.begin() as session:
                for item in items:
                    due = now + self.policy.backoff(item.attempts + 1)
                    tracked.mark_attempt(session, item.object_id, now, str(error), due)
                    report.retrying += 1
            return
        now = self.clock()
        with self.sessions.begin() as session:
            tracked.mark_stored(session, [by_path[s.path].object_id for s in result.stored], now)
            report.stored += len(result.stored)
            for refused in result.refused:
                item = by_path[refused.path]
                attempts = item.attempts + 1
                final = refused.status is not None and attempts >= self.policy.max_refusals
                retry_at: datetime | None = None if final else now + self.policy.backoff(attempts)
                tracked.mark_attempt(
                    session, item.object_id, now, f"{self.node} {refused}", retry_at, REFUSED
                )
                if final:
                    report.failed += 1
                    log.warning("results: object %d failed: %s", item.object_id, refused)
                else:
                    report.retrying += 1
            for path in result.unsent:  # the association ended early: due again now
                tracked.mark_attempt(
                    session, by_path[path].object_id, now, "association ended early", now
                )
                report.retrying += 1

    def prune(self) -> int:
        """Delete the outbox files of objects stored longer ago than the retention."""
        cutoff = self.clock() - self.policy.retention
        pruned = 0
        with self.sessions.begin() as session:
            for row in tracked.prunable(session, cutoff):
                Path(row.path or "").unlink(missing_ok=True)
                row.path = None
                pruned += 1
        if pruned:
            log.info("results: pruned %d stored file(s) from the outbox", pruned)
        return pruned

    def run(self, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set: batches back to back while objects are due, a
        ``poll_s`` pause when none is, pruning every ten minutes. A database outage is
        logged and retried; it never ends the loop."""
        last_prune: datetime | None = None
        while not stop.is_set():
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

    @classmethod
    def of(cls, row: ResultObject, session: Session) -> _Claimed:
        entry = session.get(WorklistEntry, row.entry_id)
        urgent = entry is not None and entry.priority_rank == 0
        return cls(
            object_id=row.id,
            path=Path(row.path or ""),
            attempts=row.attempts,
            priority=StorePriority.HIGH if urgent else StorePriority.MEDIUM,
        )
