"""Has the worklist changed? What an open review page asks every half second, cheaply.

The list changes when a file arrives (a new row id), when a row is finished (scored,
refused or failed: ``finished_at``) and when a reader records a review (a new
``review_history`` row). :func:`fingerprint` reads those three maxima, each one index probe
(``ix_worklist_finished_at``, migration 0011), and only when they move does
:meth:`LiveState.current` count the tiers again (the reading list's own query,
``db.reading``). One cached answer serves every open page, at most one database round trip
per :data:`TTL_S`: a hundred idle pages cost what one does.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from db.models import ReviewRecord, WorklistEntry
from db.reading import TO_READ, Scope, first_apart, leading_images
from db.reading_rule import APART, Tier
from web import auth

TTL_S = 0.5


@dataclass(frozen=True)
class Snapshot:
    """The list as an open page needs to know it: a version (changes with the list),
    entries to read per tier (and listed apart), and the URGENT image to read that was
    scored last (its row id, and when: an open page raises its alert when that moves on)."""

    version: str
    counts: dict[str, int] = field(default_factory=dict)
    newest_urgent: int | None = None
    newest_urgent_at: str = ""  # its finished_at, ISO 8601 UTC ("" when none)

    def as_json(self) -> dict[str, object]:
        return {
            "version": self.version,
            "counts": self.counts,
            "newest_urgent": self.newest_urgent,
            "newest_urgent_at": self.newest_urgent_at,
        }


def fingerprint(session: Session) -> tuple[object, ...]:
    """Three index probes: the newest row, the newest finish, the newest review."""
    rows = select(func.max(WorklistEntry.id)).scalar_subquery()
    finished = select(func.max(WorklistEntry.finished_at)).scalar_subquery()
    reviews = select(func.max(ReviewRecord.id)).scalar_subquery()
    found = session.execute(select(rows, finished, reviews)).one()
    return tuple(found)


def tier_counts(session: Session, scope: Scope = TO_READ) -> dict[str, int]:
    """Entries of ``scope``'s reading list per tier, and entries listed apart."""
    leading = leading_images(scope).subquery()
    counted = session.execute(
        select(leading.c.reading_tier, func.count()).group_by(leading.c.reading_tier)
    ).all()
    counts = {tier.label: 0 for tier in Tier}
    for tier, count in counted:
        counts[Tier(tier).label] = int(count)
    apart = (
        first_apart(scope)
        .order_by(None)
        .with_only_columns(func.count(), maintain_column_froms=True)
    )
    counts[APART] = int(session.scalar(apart) or 0)
    return counts


def newest_urgent(session: Session) -> tuple[int | None, str]:
    """The URGENT image still to read that was scored last, and when (ISO 8601 UTC).

    By finish, not by row id: a file admitted earlier can be scored after a later one
    (a bigger file, a retry), and its alert must not be lost. One probe of the partial index
    ``ix_worklist_urgent_finished_at`` (migration 0011)."""
    rows = WorklistEntry
    found = session.execute(
        select(rows.id, rows.finished_at)
        .where(
            rows.reading_tier == Tier.URGENT.value,
            rows.reviewed_at.is_(None),
            rows.finished_at.is_not(None),
        )
        .order_by(rows.finished_at.desc(), rows.id.desc())
        .limit(1)
    ).first()
    if found is None:
        return None, ""
    return int(found.id), found.finished_at.isoformat(timespec="microseconds")


class LiveState:
    """The current :class:`Snapshot`, shared by every request, at most :data:`TTL_S` old."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        ttl_s: float = TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self._print: tuple[object, ...] | None = None
        self._snapshot: Snapshot | None = None

    def current(self) -> Snapshot:
        with self._lock:
            now = self._clock()
            if self._snapshot is not None and now - self._checked_at < self._ttl_s:
                return self._snapshot
            with self._sessions() as session:
                found = fingerprint(session)
                if self._snapshot is None or found != self._print:
                    self._snapshot = Snapshot(
                        _version(found), tier_counts(session), *newest_urgent(session)
                    )
                    self._print = found
            self._checked_at = now
            return self._snapshot


def _version(found: tuple[object, ...]) -> str:
    return hashlib.sha256(repr(found).encode()).hexdigest()[:16]


#: How often an open stream looks at the shared snapshot, how long a stream lives before
#: the browser reconnects (EventSource does, after ``retry``), and the keep-alive comment.
EVENT_POLL_S = 0.5
STREAM_LIFETIME_S = 300.0
KEEPALIVE_S = 15.0
RETRY_MS = 1000
#: How often an open stream asks again whether its person may still read (an account read):
#: a disabled account, a changed password or a logout ends the stream within this.
ACCOUNT_CHECK_S = 5.0


async def events(request: Request) -> AsyncIterator[str]:
    """Server-sent events for one open page: the snapshot now, then each time it changes.

    The stream ends when the reader's session ends (logout, expiry: the page then reloads
    into the login form), after :data:`STREAM_LIFETIME_S` (the browser reconnects: no
    connection outlives a shutdown by long), or when the browser goes away (Starlette
    cancels the generator). Database work runs in the thread pool, shared through
    :meth:`LiveState.current`.
    """
    state: LiveState = request.app.state.live
    started = time.monotonic()
    sent: str | None = None
    last_write = started
    checked = -ACCOUNT_CHECK_S
    yield f"retry: {RETRY_MS}\n\n"
    while time.monotonic() - started < STREAM_LIFETIME_S:
        if time.monotonic() - checked >= ACCOUNT_CHECK_S:  # the login's own check
            checked = time.monotonic()
            if not await run_in_threadpool(_still_signed_in, request):
                yield "event: logout\ndata: {}\n\n"
                return
        snapshot = await run_in_threadpool(state.current)
        now = time.monotonic()
        if snapshot.version != sent:
            sent, last_write = snapshot.version, now
            yield f"event: snapshot\ndata: {json.dumps(snapshot.as_json())}\n\n"
        elif now - last_write >= KEEPALIVE_S:
            last_write = now
            yield ": keep-alive\n\n"
        await asyncio.sleep(EVENT_POLL_S)


def _still_signed_in(request: Request) -> bool:
    """Whether the stream's person may still read: their account is read again (a database
    read, so the caller runs it in the thread pool)."""
    try:
        return auth.current_person(request) is not None
    except auth.ProxyUserRefusedError:
        return False
