"""Claim leases: a live worker node renews the leases of the rows its running tasks hold;
a row whose lease has expired (its node died) is handed to another worker.

Every function takes the caller's session first and never commits (like :mod:`db.worklist`).

A lease says "the process holding this row is alive until then". :func:`renew` moves it on
for the tasks a node is running right now, :func:`hold` once past the moment a task's Celery
retry is due; nothing else does, so a row whose task ended without finishing it (the node
was killed, the pool process died, the task gave up) stops being renewed. :func:`expired`
finds such rows and :func:`requeue` puts them back to ``queued`` without a claim token: the
task then sent for them, or a late redelivery of the original message, claims them like any
queued row, and exactly one of those claims wins. A ``queued`` row keeps a lease too,
meaning "if still queued by then, its task was lost": it is sent again then. Sooner when the
broker says it holds no triage message at all while rows wait (a broker restarted without
persistence lost them): :func:`lost` finds them and :func:`mark_resent` takes exactly one
re-send of each.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, case, or_, select, update
from sqlalchemy.orm import Session

from db.models import WAITING_STATUSES, Status, WorklistEntry


def renew(session: Session, tokens: Collection[str], until: datetime) -> int:
    """Extend to ``until`` the leases of the ``processing`` rows held by ``tokens``; returns
    how many rows. One statement whatever the number of tokens. Rows a task has let go for
    its retry (:func:`hold`) keep their longer lease: the task is still running for the
    moment it takes to send that retry."""
    if not tokens:
        return 0
    result = session.execute(
        update(WorklistEntry)
        .where(
            WorklistEntry.status == Status.PROCESSING,
            WorklistEntry.claim_token.in_(list(tokens)),
            WorklistEntry.claimed_by.is_not(None),
        )
        .values(lease_expires_at=until)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def hold(session: Session, token: str, until: datetime) -> int:
    """The rows ``token`` holds wait for its Celery retry (a transient error): no process
    holds them now, so ``claimed_by`` is cleared (the retry's claim is then not counted as
    another attempt, :func:`db.worklist.claim`), and their lease runs to ``until``, when the
    retry is due plus a lease (nobody renews it meanwhile: the task is not running; a lease
    keeper takes them over only if the retry never comes). Returns how many rows."""
    result = session.execute(
        update(WorklistEntry)
        .where(WorklistEntry.claim_token == token, WorklistEntry.status == Status.PROCESSING)
        .values(claimed_by=None, lease_expires_at=until)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def expired(session: Session, now: datetime, limit: int = 500) -> list[int]:
    """Ids of waiting rows whose lease ran out before ``now``, oldest lease first."""
    return list(
        session.scalars(
            select(WorklistEntry.id)
            .where(
                WorklistEntry.lease_expires_at < now,
                WorklistEntry.status.in_(list(WAITING_STATUSES)),
            )
            .order_by(WorklistEntry.lease_expires_at)
            .limit(limit)
        )
    )


#: A row held for its task's retry (:func:`hold`): nobody is reading it.
_let_go = and_(WorklistEntry.status == Status.PROCESSING, WorklistEntry.claimed_by.is_(None))


def requeue(
    session: Session, entry_ids: Sequence[int], now: datetime, resend_at: datetime
) -> list[int]:
    """Put back to ``queued`` those of ``entry_ids`` whose lease is still expired at ``now``
    (a row claimed meanwhile has a fresh lease and is left alone); returns their ids.

    The claim token is cleared, so the dead task can no longer store a result for them;
    ``resend_at`` is when a still-queued row's task is presumed lost and sent again. A row
    its task had let go for a retry (:func:`hold`; the retry came late, or never: the task
    gave up, or its message was lost) gives its last claim back: no worker died reading it,
    so the take-over's claim does not count as another attempt.
    """
    if not entry_ids:
        return []
    result = session.scalars(
        update(WorklistEntry)
        .where(
            WorklistEntry.id.in_(list(entry_ids)),
            WorklistEntry.lease_expires_at < now,
            WorklistEntry.status.in_(list(WAITING_STATUSES)),
        )
        .values(
            status=Status.QUEUED,
            claim_token=None,
            claimed_by=None,
            lease_expires_at=resend_at,
            attempts=WorklistEntry.attempts - case((_let_go, 1), else_=0),
        )
        .returning(WorklistEntry.id)
        .execution_options(synchronize_session=False)
    )
    return sorted(result)


def lost(session: Session, now: datetime, grace: timedelta, requeue_after: timedelta) -> list[int]:
    """Ids of ``queued`` rows whose task was last sent more than ``grace`` ago: the
    candidates when the broker holds no triage message at all (its messages were lost).

    A queued row's last send is its arrival, or ``lease_expires_at - requeue_after`` once a
    re-send set the lease (:func:`requeue`, :func:`mark_resent`)."""
    return list(
        session.scalars(
            select(WorklistEntry.id)
            .where(*_lost_condition(now, grace, requeue_after))
            .order_by(WorklistEntry.received_at, WorklistEntry.id)
            .limit(500)
        )
    )


def mark_resent(
    session: Session,
    entry_ids: Sequence[int],
    now: datetime,
    grace: timedelta,
    requeue_after: timedelta,
) -> list[int]:
    """Record that the tasks of those of ``entry_ids`` still lost are sent again now (their
    lease becomes ``now + requeue_after``); returns them. One conditional UPDATE: of several
    worker nodes looking at once, exactly one re-sends each row (and a second message would
    still find the row claimed or final: the claim token decides)."""
    if not entry_ids:
        return []
    result = session.scalars(
        update(WorklistEntry)
        .where(WorklistEntry.id.in_(list(entry_ids)), *_lost_condition(now, grace, requeue_after))
        .values(lease_expires_at=now + requeue_after)
        .returning(WorklistEntry.id)
        .execution_options(synchronize_session=False)
    )
    return sorted(result)


def _lost_condition(
    now: datetime, grace: timedelta, requeue_after: timedelta
) -> tuple[ColumnElement[bool], ...]:
    return (
        WorklistEntry.status == Status.QUEUED,
        WorklistEntry.received_at < now - grace,
        or_(
            WorklistEntry.lease_expires_at.is_(None),
            WorklistEntry.lease_expires_at < now - grace + requeue_after,
        ),
    )
