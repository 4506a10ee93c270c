"""The ``worklist`` table: one row per input file, the system of record for every outcome.

Portable between SQLite (the embedded default) and PostgreSQL (production): statuses are
``VARCHAR`` with a CHECK constraint rather than a native enum, times are stored in UTC and
read back timezone-aware on both.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Date,
    DateTime,
    Dialect,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

UID = String(64)  # PS3.5 VR UI
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Status(StrEnum):
    """Where a row is in its life. ``done``, ``rejected`` and ``failed`` are final."""

    QUEUED = "queued"  # the file is stable, a task has been sent
    PROCESSING = "processing"  # a worker has claimed it
    DONE = "done"  # scored; the original is in the archive
    REJECTED = "rejected"  # unreadable or not eligible (bad input: never retried)
    FAILED = "failed"  # an unexpected error while scoring; the original is in quarantine


FINAL_STATUSES = frozenset({Status.DONE, Status.REJECTED, Status.FAILED})
WAITING_STATUSES = frozenset({Status.QUEUED, Status.PROCESSING})


class ReviewDecision(StrEnum):
    """What a reader recorded. The row stays on the worklist whatever the decision."""

    ACKNOWLEDGED = "acknowledged"  # seen, no opinion on the triage
    AGREE = "agree"  # the reader agrees with the triage label
    DISAGREE = "disagree"  # the reader disagrees with the triage label


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python; UTC in the database (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; pass an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _enum(enum_cls: type[StrEnum], name: str) -> Enum:
    return Enum(
        enum_cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class WorklistEntry(Base):
    """One input file and what became of it. Patient and study columns are PHI."""

    __tablename__ = "worklist"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    # -- identity: content hash always, SOP Instance UID when the file is DICOM
    file_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    sop_instance_uid: Mapped[str | None] = mapped_column(UID, unique=True)  # NULLs never clash
    study_instance_uid: Mapped[str | None] = mapped_column(UID, index=True)
    series_instance_uid: Mapped[str | None] = mapped_column(UID)
    accession_number: Mapped[str | None] = mapped_column(String(16), index=True)  # VR SH
    patient_id: Mapped[str | None] = mapped_column(String(64), index=True)  # VR LO
    source_kind: Mapped[str | None] = mapped_column(String(8))  # dicom | jpeg | png
    # -- where the file is
    source_name: Mapped[str] = mapped_column(Text)  # path relative to the inbox
    source_path: Mapped[str] = mapped_column(Text)  # absolute path while in the inbox
    archived_path: Mapped[str | None] = mapped_column(Text)  # archive or quarantine
    # -- life cycle
    status: Mapped[Status] = mapped_column(_enum(Status, "status"), default=Status.QUEUED)
    reason: Mapped[str | None] = mapped_column(String(64))  # ingest.errors.Reason value
    reason_detail: Mapped[str | None] = mapped_column(Text)  # a sentence without PHI
    claim_token: Mapped[str | None] = mapped_column(String(64))  # the Celery task holding it
    attempts: Mapped[int] = mapped_column(SmallInteger, default=0)
    # -- the claim's lease: renewed by the live worker node, taken over once expired
    claimed_by: Mapped[str | None] = mapped_column(String(255))  # host:pid of the process
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # -- the triage result
    probability: Mapped[float | None] = mapped_column(Float)
    label: Mapped[str | None] = mapped_column(String(16))
    priority: Mapped[str | None] = mapped_column(String(16))  # urgent | suspect | routine
    priority_rank: Mapped[int | None] = mapped_column(SmallInteger)  # 0 is read first
    flags: Mapped[str] = mapped_column(String(255), default="")  # comma-separated
    model_version: Mapped[str | None] = mapped_column(String(64))
    threshold: Mapped[float | None] = mapped_column(Float)
    # -- times (UTC)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # -- the human read
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reviewed_by: Mapped[str | None] = mapped_column(String(64))
    review_decision: Mapped[ReviewDecision | None] = mapped_column(
        _enum(ReviewDecision, "review_decision")
    )

    __table_args__ = (
        # Counts by status, the oldest waiting case, filters by status and date.
        Index("ix_worklist_status_received_at", "status", "received_at"),
        Index("ix_worklist_received_at", "received_at"),
        # The lease keeper's "expired claims" query, every few seconds on every worker node:
        # status first, so the final rows (whose old leases are all past) are never scanned.
        Index("ix_worklist_status_lease_expires_at", "status", "lease_expires_at"),
    )

    @property
    def flag_list(self) -> tuple[str, ...]:
        return tuple(f for f in self.flags.split(",") if f)


class ReviewRecord(Base):
    """One reader's decision on a row, as it was made. Append-only (the database refuses
    UPDATE and DELETE, migration 0003): a re-review adds a record, and the worklist row's
    ``review_*`` columns hold the latest one for the reading order."""

    __tablename__ = "review_history"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    worklist_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), ForeignKey("worklist.id"), index=True
    )
    decision: Mapped[ReviewDecision] = mapped_column(_enum(ReviewDecision, "decision"))
    reviewed_by: Mapped[str] = mapped_column(String(64))
    reviewed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    note: Mapped[str | None] = mapped_column(Text)  # the reader's words: PHI-grade


# "Next cases to read": unreviewed rows in reading order (rank, then probability high to low,
# then arrival), served by one partial index on both SQLite and PostgreSQL.
Index(
    "ix_worklist_reading_order",
    WorklistEntry.priority_rank,
    WorklistEntry.probability.desc(),
    WorklistEntry.received_at,
    postgresql_where=WorklistEntry.reviewed_at.is_(None),
    sqlite_where=WorklistEntry.reviewed_at.is_(None),
)


class ResultKind(StrEnum):
    """The DICOM objects made for a scored DICOM (pacs/)."""

    SR = "sr"  # Comprehensive SR
    SC = "sc"  # Secondary Capture with the result burned in


class ResultState(StrEnum):
    """Where a result object is on its way to the PACS. ``stored`` and ``failed`` are final
    until an operator re-sends (``cxr-triage pacs-send``)."""

    PENDING = "pending"  # in the outbox, to be sent (again, after ``next_attempt_at``)
    STORED = "stored"  # the PACS answered Success (or a warning): never sent again
    FAILED = "failed"  # will not arrive without an operator; ``reason`` says why


class ResultObject(Base):
    """One SR or SC of one worklist row, tracked until the PACS has it (pacs/delivery.py).

    A row that could not get results at all (a source without valid UIDs) has its two
    objects ``failed`` with no SOP Instance UID and no file.
    """

    __tablename__ = "result_objects"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    entry_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("worklist.id", ondelete="CASCADE"),
        index=True,
    )
    kind: Mapped[ResultKind] = mapped_column(_enum(ResultKind, "result_kind"))
    sop_instance_uid: Mapped[str | None] = mapped_column(UID)
    path: Mapped[str | None] = mapped_column(Text)  # in the outbox; None once pruned
    state: Mapped[ResultState] = mapped_column(
        _enum(ResultState, "result_state"), default=ResultState.PENDING
    )
    reason: Mapped[str | None] = mapped_column(String(64))  # why failed: a short code
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)  # a sentence without PHI
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # pending only
    stored_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("entry_id", "kind", name="uq_result_objects_entry_id_kind"),
        # The delivery loop's "what is due": pending rows by next attempt.
        Index("ix_result_objects_state_next_attempt_at", "state", "next_attempt_at"),
    )


class DriftCount(Base):
    """How many images of one day, scored by one model, fell in one bin of one measure.

    The drift watch's memory (:mod:`worker.drift`): per UTC day and model version, the
    histogram of calibrated probabilities (``score``), of content-check distances
    (``distance``), the reading priorities (``priority``, bin = rank) and the content-check
    verdicts (``content``). Counts are added with one upsert per bin, safe under concurrent
    workers, and survive the purge of worklist rows. No patient data.
    """

    __tablename__ = "drift_count"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    model_version: Mapped[str] = mapped_column(String(64), primary_key=True)
    measure: Mapped[str] = mapped_column(String(16), primary_key=True)
    bin: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), default=0)
