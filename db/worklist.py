"""Queries on the worklist. Every function takes the caller's session first and never commits.

Idempotency lives here: a file is admitted once per content hash (and once per SOP Instance
UID), and a task claims rows with its own id as the claim token, so a redelivered or retried
task picks up exactly what it held before and a duplicate delivery is a no-op.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, Update, and_, bindparam, case, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from db import reading
from db.models import (
    FINAL_STATUSES,
    WAITING_STATUSES,
    Base,
    Label,
    Priority,
    ReviewDecision,
    ReviewRecord,
    Status,
    WorklistEntry,
    utcnow,
)
from db.reading import Scope, reading_list
from ingest.image import SourceKind

#: A claim's lease when the caller names none (the worker passes ``CXR_LEASE_S``).
DEFAULT_LEASE_S = 20.0


@dataclass(frozen=True)
class Arrival:
    """A stable file in the inbox, with what its header said (None where unknown)."""

    file_sha256: str
    source_name: str
    source_path: str
    source_kind: SourceKind | None = None
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    accession_number: str | None = None
    patient_id: str | None = None
    # What the review page shows a reader beside the priority (PHI-grade, like patient_id).
    patient_age_years: float | None = None
    patient_sex: str | None = None
    view_position: str | None = None
    study_description: str | None = None


@dataclass(frozen=True)
class ScoreValues:
    """What the model said, as the row stores it (the flags: the pipeline's caveats)."""

    probability: float
    label: Label
    priority: Priority
    priority_rank: int
    threshold: float
    model_version: str
    flags: tuple[str, ...] = ()
    suspect_threshold: float | None = None  # the card's SUSPECT cut-off (None: not known)


def admit(session: Session, arrival: Arrival) -> tuple[WorklistEntry, bool]:
    """:func:`admit_many` for one file."""
    return admit_many(session, [arrival])[0]


def admit_many(session: Session, arrivals: Sequence[Arrival]) -> list[tuple[WorklistEntry, bool]]:
    """Insert a ``queued`` row per arrival unless its content or SOP Instance UID is known.

    Returns, in the order given, each arrival's row and whether it was created. One
    ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` for the batch (SQLite and PostgreSQL
    alike): safe under concurrent watchers, and a burst of files costs one round trip
    instead of one per file. A copy within the batch is not created twice.

    The rows are the parameters of one statement (SQLAlchemy's "insertmanyvalues" sends them
    as a multi-row VALUES), so the statement is compiled once per process and cached; a
    ``.values([...])`` of N rows would be a new statement for every N, compiled each time.
    """
    if not arrivals:
        return []
    now = utcnow()
    statement = (
        _insert(session, WorklistEntry)
        .on_conflict_do_nothing()
        .returning(WorklistEntry)
        # NULLs as values: DICOM and JPEG rows (UIDs or none) stay one batch, one statement
        .execution_options(render_nulls=True)
    )
    rows = [_queued_values(arrival, now) for arrival in arrivals]
    created = {entry.source_path: entry for entry in session.scalars(statement, rows)}
    known = _known_entries(session, [a for a in arrivals if a.source_path not in created])
    results: list[tuple[WorklistEntry, bool]] = []
    for arrival in arrivals:
        entry = created.get(arrival.source_path)
        if entry is not None:
            results.append((entry, True))
            continue
        existing = known.get(arrival.file_sha256) or known.get(arrival.sop_instance_uid or "")
        # None: the conflicting row was deleted in between; try this one once more (rare)
        results.append((existing, False) if existing is not None else admit(session, arrival))
    return results


def _insert(session: Session, model: type[Base]) -> postgresql.Insert | sqlite.Insert:
    """The dialect's INSERT (both spell ``ON CONFLICT`` alike)."""
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(model)


def _queued_values(arrival: Arrival, received_at: datetime) -> dict[str, object]:
    return {
        "file_sha256": arrival.file_sha256,
        "source_name": arrival.source_name,
        "source_path": arrival.source_path,
        "source_kind": arrival.source_kind,
        "sop_instance_uid": arrival.sop_instance_uid,
        "study_instance_uid": arrival.study_instance_uid,
        "series_instance_uid": arrival.series_instance_uid,
        "accession_number": arrival.accession_number,
        "patient_id": arrival.patient_id,
        "patient_age_years": arrival.patient_age_years,
        "patient_sex": arrival.patient_sex,
        "view_position": arrival.view_position,
        "study_description": arrival.study_description,
        "status": Status.QUEUED,
        "flags": "",
        "attempts": 0,
        "received_at": received_at,
    }


def _known_entries(session: Session, arrivals: Sequence[Arrival]) -> dict[str, WorklistEntry]:
    """Existing rows for these arrivals, keyed by content hash and by SOP Instance UID."""
    if not arrivals:
        return {}
    hashes = {arrival.file_sha256 for arrival in arrivals}
    uids = {arrival.sop_instance_uid for arrival in arrivals if arrival.sop_instance_uid}
    condition: ColumnElement[bool] = WorklistEntry.file_sha256.in_(hashes)
    if uids:
        condition = or_(condition, WorklistEntry.sop_instance_uid.in_(uids))
    known: dict[str, WorklistEntry] = {}
    for entry in session.scalars(select(WorklistEntry).where(condition)):
        known[entry.file_sha256] = entry
        if entry.sop_instance_uid:
            known.setdefault(entry.sop_instance_uid, entry)
    return known


def get_entry(session: Session, entry_id: int) -> WorklistEntry | None:
    return session.get(WorklistEntry, entry_id)


def get_entries(session: Session, entry_ids: Collection[int]) -> list[WorklistEntry]:
    """The rows with these ids that exist, in id order: one query."""
    if not entry_ids:
        return []
    query = select(WorklistEntry).where(WorklistEntry.id.in_(list(entry_ids)))
    return list(session.scalars(query.order_by(WorklistEntry.id)))


def claim(
    session: Session,
    entry_id: int | Sequence[int],
    token: str,
    *,
    batch_size: int,
    stale_before: datetime,
    claimed_by: str,
    lease_s: float = DEFAULT_LEASE_S,
    retry: bool = False,
) -> list[WorklistEntry]:
    """Claim ``entry_id`` (one id, or a task's batch of ids) for the task ``token``, topped up
    to ``batch_size`` rows with other queued rows that were never tried.

    Every claim counts an attempt at a row (the poison-file cap, ``max_attempts``) except the
    claim of a Celery retry of the task that held it and let go cleanly (:func:`db.leases.hold`
    cleared ``claimed_by``: no process held it while the retry waited). So a worker that died
    holding a row, a redelivery under the same token or a take-over by another task, is
    counted once at each row it held, batch-mates included, and a transient error never is.
    The database decides, not the message: a retried message that is redelivered because its
    worker died still counts.

    ``retry``: the task ran before under ``token`` (a Celery retry): it takes back every row it
    still holds and no new batch-mates (it keeps the batch it had). A task whose own rows were
    tried before takes no batch-mates either: a file that kills its worker is then retried
    with no innocent company.

    The row is claimable when it is queued, already held by ``token`` (a redelivery or retry
    of the same task), or held by a task whose lease has expired (its worker died; see
    :mod:`db.leases`); a row claimed before leases existed is stale when its task started
    before ``stale_before``. Every claimed row records ``claimed_by`` (the worker process)
    and a lease of ``lease_s`` seconds. Batch-mates are only taken when the own row is, so a
    duplicate delivery does nothing; their own tasks later find them finished and return.
    Returns every row ``token`` now holds, own rows first.

    Each statement is atomic on its own, so the caller may run this outside a transaction
    (autocommit): a crash in between leaves rows that the redelivered task, holding the same
    token, takes back (and counts: its worker died).
    """
    now = utcnow()
    let_go = and_(WorklistEntry.claim_token == token, WorklistEntry.claimed_by.is_(None))
    taken = {
        "status": Status.PROCESSING,
        "claim_token": token,
        "started_at": now,
        "attempts": WorklistEntry.attempts + case((let_go, 0), else_=1),
        "claimed_by": claimed_by,
        "lease_expires_at": now + timedelta(seconds=lease_s),
    }
    # ORM UPDATE ... RETURNING: the rows come back with the statement that claims them. Most
    # tasks of a burst find their row already taken by a batch-mate's task, and pay this one
    # statement for it, nothing more; a first claim pays no SELECT either (see below).
    ids = [entry_id] if isinstance(entry_id, int) else list(entry_id)
    own = _claimed(
        session,
        update(WorklistEntry)
        .where(
            WorklistEntry.id.in_(ids),
            or_(
                WorklistEntry.status == Status.QUEUED,
                and_(
                    WorklistEntry.status == Status.PROCESSING,
                    or_(
                        WorklistEntry.claim_token == token,
                        WorklistEntry.lease_expires_at < now,
                        and_(
                            WorklistEntry.lease_expires_at.is_(None),
                            WorklistEntry.started_at < stale_before,
                        ),
                    ),
                ),
            ),
        )
        .values(taken),
    )
    if not own:
        return []
    if retry or any(entry.attempts > 1 for entry in own):
        # The task ran before under ``token`` (a retry, or a redelivery: its worker died):
        # the batch-mates of its earlier claim are still held under it. They are claimed
        # again like the own rows (counted when the worker died, their lease renewed, else a
        # lease keeper could take them over while this task reads them), and none is added.
        earlier = _claimed(
            session,
            update(WorklistEntry)
            .where(
                WorklistEntry.claim_token == token,
                WorklistEntry.status == Status.PROCESSING,
                WorklistEntry.id.not_in(ids),
            )
            .values(taken),
        )
        return [*_arrival_order(own), *_arrival_order(earlier)]
    # A first claim of every own row: ``token`` held nothing before this call (a redelivery
    # under it would have counted these rows a second time, a retry says so), so what it
    # holds is what the statements return.
    mates: list[WorklistEntry] = []
    if batch_size > len(own):
        candidates = (
            select(WorklistEntry.id)
            .where(
                WorklistEntry.status == Status.QUEUED,
                WorklistEntry.attempts == 0,
                WorklistEntry.id.not_in(ids),
            )
            .order_by(WorklistEntry.received_at, WorklistEntry.id)
            .limit(batch_size - len(own))
            .with_for_update(skip_locked=True)  # concurrent tasks take disjoint mates
            .cte("mates")  # evaluated once (a plain IN-subquery may be re-planned per row)
        )
        mates = _claimed(
            session,
            update(WorklistEntry)
            .where(WorklistEntry.id.in_(select(candidates.c.id)))
            .where(WorklistEntry.status == Status.QUEUED)
            .values(taken),
        )
    return [*_arrival_order(own), *_arrival_order(mates)]


def _claimed(session: Session, statement: Update) -> list[WorklistEntry]:
    """The rows an UPDATE of the claim columns changed, as loaded entities."""
    returning = statement.returning(WorklistEntry).execution_options(
        synchronize_session=False, populate_existing=True
    )
    return list(session.scalars(returning))


def _arrival_order(entries: list[WorklistEntry]) -> list[WorklistEntry]:
    return sorted(entries, key=lambda entry: (entry.received_at, entry.id))


def claim_autocommit(
    sessions: sessionmaker[Session],
    entry_id: int | Sequence[int],
    token: str,
    *,
    batch_size: int,
    stale_before: datetime,
    claimed_by: str,
    lease_s: float = DEFAULT_LEASE_S,
    retry: bool = False,
) -> list[WorklistEntry]:
    """:func:`claim` in autocommit, outside any transaction, in a session of its own.

    Each of its statements is atomic, so BEGIN and COMMIT would only add round trips:
    most tasks of a burst find their row already taken by a batch-mate's task and then cost
    one statement. Returns detached rows.
    """
    with sessions() as session:
        session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        return claim(
            session,
            entry_id,
            token,
            batch_size=batch_size,
            stale_before=stale_before,
            claimed_by=claimed_by,
            lease_s=lease_s,
            retry=retry,
        )


def release(
    session: Session, entry_ids: Sequence[int], token: str, resend_at: datetime
) -> list[int]:
    """Give rows that ``token`` holds back to the queue, their last claim not counted as an
    attempt (they were not tried: their task split a suspect batch). Returns those released.

    The caller sends each a task of its own; ``resend_at`` is when a row still queued is
    presumed to have lost that task (its sender died first) and a lease keeper sends it
    again (:mod:`db.leases`): a row tried before is never a batch-mate, so nothing else
    would pick it up."""
    if not entry_ids:
        return []
    released = session.execute(
        update(WorklistEntry)
        .where(
            WorklistEntry.id.in_(list(entry_ids)),
            WorklistEntry.claim_token == token,
            WorklistEntry.status == Status.PROCESSING,
        )
        .values(
            status=Status.QUEUED,
            claim_token=None,
            claimed_by=None,
            lease_expires_at=resend_at,
            attempts=WorklistEntry.attempts - 1,
        )
        .returning(WorklistEntry.id)
    )
    return list(released.scalars())


@dataclass(frozen=True)
class Final:
    """What a task stores in a row it holds: the final status, where the original goes,
    and the model's result (``done``) or the reason (``rejected``/``failed``)."""

    entry_id: int
    status: Status
    archived_path: str
    scored: ScoreValues | None = None
    reason: str | None = None
    detail: str = ""

    def __post_init__(self) -> None:
        if self.status not in FINAL_STATUSES:
            raise ValueError(f"row {self.entry_id}: {self.status} is not a final status")
        if (self.status is Status.DONE) != (self.scored is not None):
            raise ValueError(f"row {self.entry_id}: a result is stored with done, and only then")
        if self.status is not Status.DONE and not self.reason:
            raise ValueError(f"row {self.entry_id}: {self.status} needs a reason")


def record_final(session: Session, token: str, finals: Sequence[Final]) -> list[int]:
    """Store each row's final values if ``token`` still holds it (``processing`` under its
    claim token; a row taken over after its lease expired is the other task's). Returns the
    ids stored, in the order given.

    The values of :func:`scored_columns` / :func:`unscored_columns`, guarded: one cached UPDATE
    per kind (scored, unscored) executed for all the batch's rows at once (executemany),
    instead of a SELECT and then an UPDATE per row. Only when fewer rows matched than were
    given (rare: a take-over) does a SELECT ask which.
    """
    if not finals:
        return []
    now = utcnow()
    scored: list[dict[str, object]] = []
    unscored: list[dict[str, object]] = []
    for final in finals:
        if final.scored is not None:
            columns = scored_columns(final.scored, final.archived_path, now)
            scored.append({"row_id": final.entry_id, **columns})
        else:
            columns = unscored_columns(
                final.status, final.reason, final.detail, final.archived_path, now
            )
            unscored.append({"row_id": final.entry_id, **columns})
    statement = update(WorklistEntry).where(
        WorklistEntry.id == bindparam("row_id"),  # the SET columns: each row's other keys
        WorklistEntry.claim_token == token,
        WorklistEntry.status == Status.PROCESSING,
    )
    connection = session.connection()
    matched = sum(
        connection.execute(statement, rows).rowcount for rows in (scored, unscored) if rows
    )
    ids = [final.entry_id for final in finals]
    if matched == len(finals):
        return ids
    stored = set(
        session.scalars(
            select(WorklistEntry.id).where(
                WorklistEntry.id.in_(ids),
                WorklistEntry.claim_token == token,
                WorklistEntry.finished_at == now,  # this call's, not an earlier one's
            )
        )
    )
    return [entry_id for entry_id in ids if entry_id in stored]


def scored_columns(
    scored: ScoreValues, archived_path: str, finished_at: datetime
) -> dict[str, object]:
    """The columns a ``done`` row ends with: the model's result, where its original went."""
    return {
        "status": Status.DONE,
        "probability": scored.probability,
        "label": scored.label,
        "priority": scored.priority,
        "priority_rank": scored.priority_rank,
        "threshold": scored.threshold,
        "suspect_threshold": scored.suspect_threshold,
        "model_version": scored.model_version,
        "flags": ",".join(sorted(set(scored.flags))),
        "reason": None,
        "reason_detail": None,
        "archived_path": archived_path,
        "finished_at": finished_at,
    }


def unscored_columns(
    status: Status, reason: str | None, detail: str, archived_path: str, finished_at: datetime
) -> dict[str, object]:
    """The columns a ``rejected`` or ``failed`` row ends with: why, and where its original went."""
    return {
        "status": status,
        "reason": reason,
        "reason_detail": detail,
        "archived_path": archived_path,
        "finished_at": finished_at,
    }


#: Units of a relative time filter such as ``30m``, ``24h`` or ``7d``.
RELATIVE_UNITS = {"m": 60, "h": 3600, "d": 86400}


def parse_when(value: str) -> datetime:
    """A time filter: ``24h`` / ``7d`` / ``30m`` ago, or an ISO date or time (UTC unless a
    zone is given). Raises ``ValueError`` with a sentence naming the value."""
    value = value.strip()
    if value[:-1].isdigit() and value[-1:] in RELATIVE_UNITS:
        if len(value) > 12:  # int() of a huge digit string is slow before it overflows
            raise ValueError(f"{value[:12]!r}... is too far back")
        try:
            return utcnow() - timedelta(seconds=int(value[:-1]) * RELATIVE_UNITS[value[-1]])
        except OverflowError as error:  # 1000000d: before year 1
            raise ValueError(f"{value!r} is too far back") from error
    try:
        parsed = datetime.fromisoformat(value)
        # as UTC now, so a zone at the edge of the calendar fails here rather than in the query
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError) as error:
        raise ValueError(f"{value!r} is neither a date, a time nor 30m/24h/7d") from error


def reading_order(
    session: Session,
    *,
    statuses: Collection[Status] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    patient_id: str | None = None,
    accession_number: str | None = None,
    include_reviewed: bool = False,
    limit: int | None = 50,
) -> Sequence[WorklistEntry]:
    """The images of the reading list (:func:`db.reading.reading_list`), entry by entry in
    reading order, then those listed apart: at most ``limit`` images. None is ever left out
    for being unscored; callers that show entries use :mod:`db.reading` itself."""
    scope = Scope.of(
        statuses=statuses,
        since=since,
        until=until,
        patient_id=patient_id,
        accession_number=accession_number,
        include_reviewed=include_reviewed,
    )
    images = reading_list(session, scope, limit=limit, count=False).images
    return images if limit is None else images[:limit]


def next_to_read(session: Session, after_id: int) -> WorklistEntry | None:
    """:func:`db.reading.next_to_read`: the leading image of the next entry to read."""
    return reading.next_to_read(session, after_id)


def counts_by_status(session: Session) -> dict[Status, int]:
    rows = session.execute(
        select(WorklistEntry.status, func.count()).group_by(WorklistEntry.status)
    ).all()
    counts = dict.fromkeys(Status, 0)
    for status, count in rows:
        counts[Status(status)] = count
    return counts


def oldest_waiting(session: Session) -> WorklistEntry | None:
    """The queued or processing row that arrived first: how far behind the workers are."""
    return session.scalars(
        select(WorklistEntry)
        .where(WorklistEntry.status.in_(list(WAITING_STATUSES)))
        .order_by(WorklistEntry.received_at, WorklistEntry.id)
        .limit(1)
    ).first()


def review(
    session: Session,
    entry_id: int,
    decision: ReviewDecision,
    reviewed_by: str,
    *,
    note: str | None = None,
) -> WorklistEntry:
    """Record a reader's decision: appended to the review history, and the row keeps the
    latest. Raises ``LookupError`` for an unknown id."""
    entry = session.get(WorklistEntry, entry_id)
    if entry is None:
        raise LookupError(f"worklist row {entry_id} does not exist")
    now = utcnow()
    entry.review_decision = decision
    entry.reviewed_by = reviewed_by
    entry.reviewed_at = now
    session.add(
        ReviewRecord(
            worklist_id=entry_id,
            decision=decision,
            reviewed_by=reviewed_by,
            reviewed_at=now,
            note=note,
        )
    )
    session.flush()
    return entry


def review_history(session: Session, entry_id: int) -> list[ReviewRecord]:
    """Every review recorded on the row, oldest first."""
    query = select(ReviewRecord).where(ReviewRecord.worklist_id == entry_id)
    return list(session.scalars(query.order_by(ReviewRecord.reviewed_at, ReviewRecord.id)))
