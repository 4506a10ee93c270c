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

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.orm import Session

from db.models import DICOM_KINDS, ResultKind, ResultObject, ResultState, WorklistEntry

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
        row.schedule_started_at = now
        row.claim_token = None
        row.claimed_by = None
        row.updated_at = now
    session.flush()


def record_unpublishable(
    session: Session,
    entry_id: int,
    reason: str,
    detail: str,
    now: datetime,
    kinds: Sequence[ResultKind] = DICOM_KINDS,
) -> None:
    """The objects ``kinds`` of row ``entry_id`` (default the SR and the SC) are ``failed``:
    no result could be made for it.

    ``detail`` is shown to operators: a sentence without patient data.
    """
    existing = {
        row.kind: row
        for row in session.scalars(select(ResultObject).where(ResultObject.entry_id == entry_id))
    }
    for kind in kinds:
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
        row.claim_token = None
        row.claimed_by = None
        row.updated_at = now
    session.flush()


def claim_due(
    session: Session,
    now: datetime,
    limit: int,
    lease: timedelta,
    token: str,
    holder: str | None = None,
    kinds: Sequence[ResultKind] = DICOM_KINDS,
    *,
    waiting_too: bool = False,
) -> list[ResultObject]:
    """Take up to ``limit`` due ``pending`` objects of ``kinds``, urgent rows first, for one
    delivery.

    In one conditional UPDATE they get ``token`` (the deliverer's pass for this batch),
    ``holder`` and a lease: ``next_attempt_at`` moves ``lease`` ahead, so no other deliverer
    takes them while the holder renews it (:func:`renew_claims`), and one that dies leaves
    them due again when the lease runs out. Commit right after, before sending.

    ``waiting_too``: objects still waiting out their backoff are taken as well (never one
    another deliverer holds): after an outage of its destination a deliverer drains the
    whole backlog in priority order, not in the order the backoffs happen to end.
    """
    claimable = _claimable(now, waiting_too)
    due = (
        select(ResultObject.id)
        .join(WorklistEntry, WorklistEntry.id == ResultObject.entry_id)
        .where(
            ResultObject.state == ResultState.PENDING,
            ResultObject.kind.in_(list(kinds)),
            claimable,
        )
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
        .where(ResultObject.id.in_(ids), ResultObject.state == ResultState.PENDING, claimable)
        .values(next_attempt_at=now + lease, claim_token=token, claimed_by=holder)
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


def _claimable(now: datetime, waiting_too: bool) -> ColumnElement[bool]:
    """Due now; with ``waiting_too``, also any object no live claim holds."""
    due = ResultObject.next_attempt_at <= now
    return or_(due, ResultObject.claim_token.is_(None)) if waiting_too else due


def release_waiting(session: Session, now: datetime, kinds: Sequence[ResultKind]) -> int:
    """Make every ``pending`` object of ``kinds`` that waits out a backoff due now (its
    destination is back); claimed objects keep their lease. Returns how many."""
    result = session.execute(
        update(ResultObject)
        .where(
            ResultObject.state == ResultState.PENDING,
            ResultObject.kind.in_(list(kinds)),
            ResultObject.next_attempt_at > now,
            ResultObject.claim_token.is_(None),
        )
        .values(next_attempt_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def renew_claims(session: Session, token: str, until: datetime) -> int:
    """Extend to ``until`` the lease of the objects ``token`` still holds; returns how many
    (fewer than claimed: an operator re-sent some meanwhile, or the lease ran out and
    another deliverer took them)."""
    result = session.execute(
        update(ResultObject)
        .where(ResultObject.claim_token == token, ResultObject.state == ResultState.PENDING)
        .values(next_attempt_at=until)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def mark_stored(
    session: Session, object_ids: Iterable[int], now: datetime, token: str | None = None
) -> int:
    """The PACS took these objects: ``stored``, never sent again. With ``token``, only the
    objects that token still holds; returns how many rows changed."""
    query = (
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
            claim_token=None,
            claimed_by=None,
        )
        .execution_options(synchronize_session=False)
    )
    if token is not None:
        query = query.where(ResultObject.claim_token == token)
    return int(getattr(session.execute(query), "rowcount", 0) or 0)


def mark_attempt(
    session: Session,
    object_id: int,
    now: datetime,
    error: str,
    next_attempt_at: datetime | None,
    reason: str | None = None,
    token: str | None = None,
) -> bool:
    """One more attempt that did not store the object: due again at ``next_attempt_at``, or
    ``failed`` with ``reason`` when that is ``None``. ``error`` holds no patient data. With
    ``token``, only if that token still holds the object (a deliverer that lost its claim
    records nothing over the new holder's outcome); returns whether the row changed."""
    values: dict[str, object] = {
        "attempts": ResultObject.attempts + 1,
        "last_error": error[:ERROR_MAX_CHARS],
        "updated_at": now,
        "next_attempt_at": next_attempt_at,
        "claim_token": None,
        "claimed_by": None,
    }
    if next_attempt_at is None:
        values.update(state=ResultState.FAILED, reason=reason or "failed")
    query = (
        update(ResultObject)
        .where(ResultObject.id == object_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if token is not None:
        query = query.where(ResultObject.claim_token == token)
    return bool(getattr(session.execute(query), "rowcount", 0))


def requeue(
    session: Session,
    now: datetime,
    *,
    entry_id: int | None = None,
    include_stored: bool = False,
    kinds: Sequence[ResultKind] = DICOM_KINDS,
) -> int:
    """Make objects due now again on a fresh schedule (the operator's ``pacs-send``);
    returns how many.

    Only objects of ``kinds`` (``pacs-send``: the SR and SC; ``ris-send``: the RIS messages).
    Without ``entry_id``: every ``failed`` object that has a file. With it: that row's
    ``failed`` and ``pending`` objects, and its ``stored`` ones too when ``include_stored``
    (an explicit re-send, e.g. after the PACS lost them). Each starts over: no attempts, the
    give-up time counted from now, no claim (a deliverer holding one records nothing more).
    """
    states = [ResultState.FAILED, ResultState.PENDING]
    if include_stored:
        states.append(ResultState.STORED)
    query = (
        update(ResultObject)
        .where(
            ResultObject.state.in_(states),
            ResultObject.path.is_not(None),
            ResultObject.kind.in_(list(kinds)),
        )
        .values(
            state=ResultState.PENDING,
            reason=None,
            attempts=0,
            next_attempt_at=now,
            schedule_started_at=now,
            stored_at=None,
            updated_at=now,
            claim_token=None,
            claimed_by=None,
        )
        .execution_options(synchronize_session=False)
    )
    if entry_id is not None:
        query = query.where(ResultObject.entry_id == entry_id)
    else:
        query = query.where(ResultObject.state == ResultState.FAILED)
    return int(session.execute(query).rowcount or 0)  # type: ignore[attr-defined]


def prunable(
    session: Session,
    stored_before: datetime,
    limit: int = 500,
    kinds: Sequence[ResultKind] = DICOM_KINDS,
) -> list[ResultObject]:
    """``stored`` objects of ``kinds`` whose file is still in the outbox, stored before the
    cut-off."""
    return list(
        session.scalars(
            select(ResultObject)
            .where(
                ResultObject.state == ResultState.STORED,
                ResultObject.kind.in_(list(kinds)),
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


def state_counts(
    session: Session, kinds: Sequence[ResultKind] | None = None
) -> dict[ResultState, int]:
    """How many objects (of ``kinds``; default all) are in each state (every state
    present, zero included)."""
    counts = dict.fromkeys(ResultState, 0)
    query = select(ResultObject.state, func.count()).group_by(ResultObject.state)
    if kinds is not None:
        query = query.where(ResultObject.kind.in_(list(kinds)))
    for state, count in session.execute(query):
        counts[ResultState(state)] = int(count)
    return counts


def kind_state_counts(session: Session) -> dict[tuple[ResultKind, ResultState], int]:
    """How many objects of each kind are in each state (every pair present, zero included)."""
    counts = {(kind, state): 0 for kind in ResultKind for state in ResultState}
    query = select(ResultObject.kind, ResultObject.state, func.count()).group_by(
        ResultObject.kind, ResultObject.state
    )
    for kind, state, count in session.execute(query):
        counts[(ResultKind(kind), ResultState(state))] = int(count)
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
