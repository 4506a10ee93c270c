"""Service leases: a service that must run once (the watcher of a share) runs in whichever
process holds its lease row; the others stand by and take the lease once it has expired.

Every function takes the caller's session first and never commits (like :mod:`db.worklist`).

Why a row and not a PostgreSQL advisory lock: a row works on SQLite too (the embedded
mode), says who holds it and until when (``cxr-triage status``), survives a database
restart, and needs no connection held open for the whole term, which a connection pooler
in transaction mode (PgBouncer) would break. Its cost: a dead holder is replaced after its
lease runs out, not at once. Times are the nodes' clocks in UTC, as for claim leases: the
nodes must be NTP-synchronised (a skew eats into the holder's safety margin, see
:mod:`worker.leadership`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import case, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db.models import ServiceLease


def acquire(session: Session, name: str, holder: str, now: datetime, until: datetime) -> int | None:
    """Take the lease ``name`` for ``holder`` until ``until`` if nobody holds it, its lease
    expired before ``now``, or ``holder`` holds it already. Returns the term (a new one on a
    hand-over), or None while another holder's lease runs.

    One UPDATE for an existing row (under concurrent standbys PostgreSQL re-checks the
    condition on the row the first one changed, so only one wins), and an ``INSERT ... ON
    CONFLICT DO NOTHING`` for the very first holder.
    """
    mine = ServiceLease.holder == holder
    taken = session.execute(
        update(ServiceLease)
        .where(ServiceLease.name == name, mine | (ServiceLease.expires_at < now))
        .values(
            holder=holder,
            term=case((mine, ServiceLease.term), else_=ServiceLease.term + 1),
            acquired_at=case((mine, ServiceLease.acquired_at), else_=now),
            renewed_at=now,
            expires_at=until,
        )
        .returning(ServiceLease.term)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    if taken is not None:
        return int(taken)
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    first = session.execute(
        insert(ServiceLease)
        .values(name=name, holder=holder, term=1, acquired_at=now, renewed_at=now, expires_at=until)
        .on_conflict_do_nothing()
        .returning(ServiceLease.term)
    ).scalar_one_or_none()
    return None if first is None else int(first)


def renew(session: Session, name: str, holder: str, now: datetime, until: datetime) -> bool:
    """Move ``holder``'s lease on to ``until``; False when another process holds it now."""
    result = session.execute(
        update(ServiceLease)
        .where(ServiceLease.name == name, ServiceLease.holder == holder)
        .values(renewed_at=now, expires_at=until)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def release(session: Session, name: str, holder: str, now: datetime) -> bool:
    """End ``holder``'s lease now (a clean stop): a standby takes over at its next look."""
    result = session.execute(
        update(ServiceLease)
        .where(ServiceLease.name == name, ServiceLease.holder == holder)
        .values(expires_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def current(session: Session, name: str) -> ServiceLease | None:
    """The lease row of ``name`` (expired or not), or None if it was never taken."""
    return session.scalars(select(ServiceLease).where(ServiceLease.name == name)).first()
