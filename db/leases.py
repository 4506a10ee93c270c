"""Claim leases: a live worker node renews the leases of the rows its running tasks hold;
a row whose lease has expired (its node died) is handed to another worker.

Every function takes the caller's session first and never commits (like :mod:`db.worklist`).

A lease says "the process holding this row is alive until then". :func:`renew` moves it on
for the tasks a node is running right now; nothing else does, so a row whose task ended
without finishing it (the node was killed, the pool process died, the task gave up) stops
being renewed. :func:`expired` finds such rows and :func:`requeue` puts them back to
``queued`` without a claim token: the task then sent for them, or a late redelivery of the
original message, claims them like any queued row, and exactly one of those claims wins.
A ``queued`` row keeps a lease too, meaning "if still queued by then, its task was lost":
it is sent again then.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import WAITING_STATUSES, Status, WorklistEntry


def renew(session: Session, tokens: Collection[str], until: datetime) -> int:
    """Extend to ``until`` the leases of the ``processing`` rows held by ``tokens``; returns
    how many rows. One statement whatever the number of tokens."""
    if not tokens:
        return 0
    result = session.execute(
        update(WorklistEntry)
        .where(
            WorklistEntry.status == Status.PROCESSING,
            WorklistEntry.claim_token.in_(list(tokens)),
        )
        .values(lease_expires_at=until)
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


def requeue(
    session: Session, entry_ids: Sequence[int], now: datetime, resend_at: datetime
) -> list[int]:
    """Put back to ``queued`` those of ``entry_ids`` whose lease is still expired at ``now``
    (a row claimed meanwhile has a fresh lease and is left alone); returns their ids.

    The claim token is cleared, so the dead task can no longer store a result for them;
    ``resend_at`` is when a still-queued row's task is presumed lost and sent again.
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
        )
        .returning(WorklistEntry.id)
        .execution_options(synchronize_session=False)
    )
    return sorted(result)
