"""The ``result_objects`` table: each SR and SC of a worklist row, until the PACS has it.

Query functions take the session first and never commit (the caller owns the transaction).
The life of an object: :func:`record_written` makes it ``pending`` (or leaves it ``stored``
when the same object was stored before: nothing is sent twice); the delivery loop
(:mod:`pacs.delivery`) :func:`claim_due` objects, then :func:`mark_stored` or
:func:`mark_attempt`; an operator's ``pacs-send`` calls :func:`requeue`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.models import ResultKind, ResultObject, ResultState, WorklistEntry

ERROR_MAX_CHARS = 500


@dataclass(frozen=True)
class WrittenObject:
    """A result file now in the outbox."""

    kind: ResultKind
    sop_instance_uid: str
    path: str


def record_written(
    session: Session, entry_id: int, objects: Sequence[WrittenObject], now: datetime
) -> None:
    """Track ``objects`` of row ``entry_id`` as ``pending``, due now.

    An object already ``stored`` under the same SOP Instance UID (a redelivered results task
    rewrote the same file) stays ``stored``: the PACS has it and it is never re-sent. A new
    model version or a re-scored row replaces the tracking row of that kind.
    """
    existing = {
        row.kind: row
        for row in session.scalars(select(ResultObject).where(ResultObject.entry_id == entry_id))
    }
    for written in objects:
        row = existing.get(written.kind)
        if row is None:
            row = ResultObject(entry_id=entry_id, kind=written.kind, created_at=now)
            session.add(row)
        elif row.state is ResultState.STORED and row.sop_instance_uid == written.sop_instance_uid:
            row.path = written.path
            continue
        row.sop_instance_uid = written.sop_instance_uid
        row.path = written.path
        row.state = ResultState.PENDING
        row.reason = None
        row.attempts = 0
        row.last_error = None
        row.stored_at = None
        row.next_attempt_at = now
        row.updated_at = now
    session.flush()


def record_unpublishable(
    session: Session, entry_id: int, reason: str, detail: str, now: datetime
) -> None:
    """Both objects of row ``entry_id`` are ``failed``: no result could be made for it.

    ``detail`` is shown to operators: a sentence without patient data.
    """
    existing = {
        row.kind: row
        for row in session.scalars(select(ResultObject).where(ResultObject.entry_id == entry_id))
    }
    for kind in ResultKind:
        row = existing.get(kind)
        if row is None:
            row = ResultObject(entry_id=entry_id, kind=kind, created_at=now, attempts=0)
            session.add(row)
        row.state = ResultState.FAILED
        row.sop_instance_uid = None
        row.path = None
        row.reason = reason
        row.last_error = detail[:ERROR_MAX_CHARS]
        row.next_attempt_at = None
        row.updated_at = now
    session.flush()


def claim_due(session: Session, now: datetime, limit: int, lease: timedelta) -> list[ResultObject]:
    """Take up to ``limit`` due ``pending`` objects, urgent rows first, for one delivery.

    Their ``next_attempt_at`` moves ``lease`` ahead in one conditional UPDATE, so a second
    delivery loop does not take them, and a loop that dies leaves them due again after the
    lease. Commit right after, before sending.
    """
    due = (
        select(ResultObject.id)
        .join(WorklistEntry, WorklistEntry.id == ResultObject.entry_id)
        .where(ResultObject.state == ResultState.PENDING, ResultObject.next_attempt_at <= now)
        .order_by(
            WorklistEntry.priority_rank.asc().nulls_last(),
            ResultObject.next_attempt_at,
            ResultObject.id,
        )
        .limit(limit)
    )
    ids = list(session.scalars(due))
    if not ids:
        return []
    claimed = session.scalars(
        update(ResultObject)
        .where(
            ResultObject.id.in_(ids),
            ResultObject.state == ResultState.PENDING,
            ResultObject.next_attempt_at <= now,
        )
        .values(next_attempt_at=now + lease)
        .returning(ResultObject.id)
        .execution_options(synchronize_session=False)
    ).all()
    rows = session.scalars(
        select(ResultObject)
        .where(ResultObject.id.in_(claimed))
        .execution_options(populate_existing=True)
    ).all()
    order = {row_id: index for index, row_id in enumerate(ids)}
    return sorted(rows, key=lambda row: order[row.id])


def mark_stored(session: Session, object_ids: Iterable[int], now: datetime) -> None:
    """The PACS took these objects: ``stored``, never sent again."""
    session.execute(
        update(ResultObject)
        .where(ResultObject.id.in_(list(object_ids)))
        .values(
            state=ResultState.STORED,
            attempts=ResultObject.attempts + 1,
            stored_at=now,
            updated_at=now,
            next_attempt_at=None,
            reason=None,
            last_error=None,
        )
        .execution_options(synchronize_session=False)
    )


def mark_attempt(
    session: Session,
    object_id: int,
    now: datetime,
    error: str,
    next_attempt_at: datetime | None,
    reason: str | None = None,
) -> None:
    """One more attempt that did not store the object: due again at ``next_attempt_at``, or
    ``failed`` with ``reason`` when that is ``None``. ``error`` holds no patient data."""
    values: dict[str, object] = {
        "attempts": ResultObject.attempts + 1,
        "last_error": error[:ERROR_MAX_CHARS],
        "updated_at": now,
        "next_attempt_at": next_attempt_at,
    }
    if next_attempt_at is None:
        values.update(state=ResultState.FAILED, reason=reason or "failed")
    session.execute(
        update(ResultObject)
        .where(ResultObject.id == object_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def requeue(
    session: Session, now: datetime, *, entry_id: int | None = None, include_stored: bool = False
) -> int:
    """Make objects due now again (the operator's ``pacs-send``); returns how many.

    Without ``entry_id``: every ``failed`` object that has a file. With it: that row's
    ``failed`` and ``pending`` objects, and its ``stored`` ones too when ``include_stored``
    (an explicit re-send, e.g. after the PACS lost them).
    """
    states = [ResultState.FAILED, ResultState.PENDING]
    if include_stored:
        states.append(ResultState.STORED)
    query = (
        update(ResultObject)
        .where(ResultObject.state.in_(states), ResultObject.path.is_not(None))
        .values(
            state=ResultState.PENDING,
            reason=None,
            next_attempt_at=now,
            stored_at=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if entry_id is not None:
        query = query.where(ResultObject.entry_id == entry_id)
    else:
        query = query.where(ResultObject.state == ResultState.FAILED)
    return int(session.execute(query).rowcount or 0)  # type: ignore[attr-defined]


def prunable(session: Session, stored_before: datetime, limit: int = 500) -> list[ResultObject]:
    """``stored`` objects whose file is still in the outbox, stored before the cut-off."""
    return list(
        session.scalars(
            select(ResultObject)
            .where(
                ResultObject.state == ResultState.STORED,
                ResultObject.path.is_not(None),
                ResultObject.stored_at < stored_before,
            )
            .order_by(ResultObject.stored_at)
            .limit(limit)
        )
    )


def objects_of(session: Session, entry_ids: Iterable[int]) -> dict[int, list[ResultObject]]:
    """The tracked objects of each row (SR before SC); rows without any are absent."""
    found: dict[int, list[ResultObject]] = {}
    rows = session.scalars(
        select(ResultObject)
        .where(ResultObject.entry_id.in_(list(entry_ids)))
        .order_by(ResultObject.entry_id, ResultObject.kind.desc())
    )
    for row in rows:
        found.setdefault(row.entry_id, []).append(row)
    return found


def state_counts(session: Session) -> dict[ResultState, int]:
    """How many objects are in each state (every state present, zero included)."""
    counts = dict.fromkeys(ResultState, 0)
    query = select(ResultObject.state, func.count()).group_by(ResultObject.state)
    for state, count in session.execute(query):
        counts[ResultState(state)] = int(count)
    return counts


def summary(objects: Sequence[ResultObject]) -> str:
    """One short phrase for a worklist row's results: the worst state wins.

    ``""`` without objects (not a DICOM, not scored); ``failed: <reason>``; ``pending (n
    attempts)``; ``stored``.
    """
    if not objects:
        return ""
    failed = [o for o in objects if o.state is ResultState.FAILED]
    if failed:
        return f"failed: {failed[0].reason or 'unknown'}"
    pending = [o for o in objects if o.state is ResultState.PENDING]
    if pending:
        attempts = max(o.attempts for o in pending)
        return f"pending ({attempts} attempts)" if attempts else "pending"
    return "stored"
