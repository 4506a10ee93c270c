"""The ``worklist`` table: one row per input file, the system of record for every outcome.

Portable between SQLite (the embedded default) and PostgreSQL (production): statuses are
``VARCHAR`` with a CHECK constraint rather than a native enum, times are stored in UTC and
read back timezone-aware on both. The model's label and priority and the source's kind are
``VARCHAR`` without a CHECK (as since migration 0001), read and written as their enums
(:class:`StrEnumText`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import TypeVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    Computed,
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
    and_,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from db.reading_rule import READING_TIER, STUDY_KEY, STUDY_KEY_LENGTH
from ingest.image import SourceKind
from model.prediction import Label, Priority

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


E = TypeVar("E", bound=StrEnum)


class StrEnumText(TypeDecorator[E]):
    """A :class:`~enum.StrEnum` in a plain ``VARCHAR(length)``: the column is stored as the
    enum's values, exactly as the strings written before it was an enum (no CHECK, so the
    schema and the stored rows are unchanged; no migration).

    Strict when writing: a value that is not one of the enum's raises ``ValueError`` before
    it reaches the database. Tolerant when reading: a value this version does not know (one a
    newer version wrote, during a rolling upgrade) reads back as the plain string, as it did
    before, rather than failing every page that lists the row.
    """

    impl = String
    cache_ok = True

    def __init__(self, enum_class: type[E], length: int) -> None:
        super().__init__(length)
        self.enum_class = enum_class
        self.length = length

    def process_bind_param(self, value: E | str | None, dialect: Dialect) -> str | None:
        return None if value is None else self.enum_class(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> E | None:
        if value is None:
            return None
        try:
            return self.enum_class(value)
        except ValueError:
            return value  # type: ignore[return-value]  # unknown here: kept as stored

    @property
    def python_type(self) -> type[E]:
        return self.enum_class


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
    # -- from the header at admission, for the review page (migration 0011); PHI-grade
    patient_age_years: Mapped[float | None] = mapped_column(Float)  # (0010,1010) or birth date
    patient_sex: Mapped[str | None] = mapped_column(String(1))  # M | F | O
    view_position: Mapped[str | None] = mapped_column(String(16))  # (0018,5101), VR CS
    study_description: Mapped[str | None] = mapped_column(String(64))  # (0008,1030), VR LO
    source_kind: Mapped[SourceKind | None] = mapped_column(StrEnumText(SourceKind, 8))
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
    label: Mapped[Label | None] = mapped_column(StrEnumText(Label, 16))
    priority: Mapped[Priority | None] = mapped_column(StrEnumText(Priority, 16))
    priority_rank: Mapped[int | None] = mapped_column(SmallInteger)  # 0 is read first
    flags: Mapped[str] = mapped_column(String(255), default="")  # comma-separated
    model_version: Mapped[str | None] = mapped_column(String(64))
    threshold: Mapped[float | None] = mapped_column(Float)  # at or above: URGENT
    suspect_threshold: Mapped[float | None] = mapped_column(Float)  # at or above: SUSPECT
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
    # -- the reading list (db.reading_rule): computed by the database, never written. STORED
    # (migration 0006 adds them virtual on SQLite, whose ALTER TABLE cannot add stored ones)
    reading_tier: Mapped[int | None] = mapped_column(
        SmallInteger, Computed(READING_TIER, persisted=True)
    )
    study_key: Mapped[str | None] = mapped_column(
        String(STUDY_KEY_LENGTH), Computed(STUDY_KEY, persisted=True), index=True
    )

    __table_args__ = (
        # Counts by status, the oldest waiting case, filters by status and date.
        Index("ix_worklist_status_received_at", "status", "received_at"),
        Index("ix_worklist_received_at", "received_at"),
        # The review page's change check (web/live.py): the newest finish, one index probe.
        Index("ix_worklist_finished_at", "finished_at"),
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


# The reading list (db.reading): the images still to read that the device reads, walked in
# order (tier, then arrival) by one partial index on both SQLite and PostgreSQL, so the first
# page stops after its entries; and those listed apart, by arrival.
_TO_READ_ORDERED = and_(
    WorklistEntry.reviewed_at.is_(None), WorklistEntry.reading_tier.is_not(None)
)
Index(
    "ix_worklist_reading_order",
    WorklistEntry.reading_tier,
    WorklistEntry.received_at,
    WorklistEntry.id,
    postgresql_where=_TO_READ_ORDERED,
    sqlite_where=_TO_READ_ORDERED,
)
# The review page's URGENT alert (web/live.py): the URGENT image to read scored last.
_URGENT_TO_READ = and_(WorklistEntry.reviewed_at.is_(None), WorklistEntry.reading_tier == 0)
Index(
    "ix_worklist_urgent_finished_at",
    WorklistEntry.finished_at,
    WorklistEntry.id,
    postgresql_where=_URGENT_TO_READ,
    sqlite_where=_URGENT_TO_READ,
)
_TO_READ_APART = and_(WorklistEntry.reviewed_at.is_(None), WorklistEntry.reading_tier.is_(None))
Index(
    "ix_worklist_reading_apart",
    WorklistEntry.received_at,
    WorklistEntry.id,
    postgresql_where=_TO_READ_APART,
    sqlite_where=_TO_READ_APART,
)


class ResultKind(StrEnum):
    """The result objects made for an exam: DICOM objects into its study (pacs/), messages to
    the RIS by its accession number (ris/)."""

    SR = "sr"  # Comprehensive SR
    SC = "sc"  # Secondary Capture with the result burned in
    HL7 = "hl7"  # HL7 v2 ORU^R01 over MLLP
    FHIR = "fhir"  # FHIR R4 DiagnosticReport


#: The kinds the PACS deliverer sends, and those the RIS deliverers send (one kind each).
DICOM_KINDS = (ResultKind.SR, ResultKind.SC)
RIS_KINDS = (ResultKind.HL7, ResultKind.FHIR)


class ResultState(StrEnum):
    """Where a result object is on its way to the PACS. ``stored`` and ``failed`` are final
    until an operator re-sends (``cxr-triage pacs-send``)."""

    PENDING = "pending"  # in the outbox, to be sent (again, after ``next_attempt_at``)
    STORED = "stored"  # the PACS answered Success (or a warning): never sent again
    FAILED = "failed"  # will not arrive without an operator; ``reason`` says why


class ResultObject(Base):
    """One result object of one worklist row (an SR or SC for the PACS, an HL7 or FHIR
    message for the RIS), tracked until its destination has it (pacs/delivery.py).

    ``sop_instance_uid`` is the object's identity, checked against its file before each
    send: the SOP Instance UID of an SR or SC, the MSH-10 message control id of an HL7
    message, the ``urn:uuid`` identifier of a FHIR DiagnosticReport. A row that could not
    get results at all (a source without valid UIDs) has its objects ``failed`` with no
    identity and no file.
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
    #: Pending only: when it is due; while a deliverer holds it, the end of that claim's lease.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    stored_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # -- the delivery claim (migration 0007): who sends it now, and since when it is retried
    claim_token: Mapped[str | None] = mapped_column(String(64))  # the holding deliverer's pass
    claimed_by: Mapped[str | None] = mapped_column(String(255))  # host:pid of that deliverer
    #: When the current delivery schedule began (written, or re-sent by an operator):
    #: temporary failures are retried until ``CXR_RESULTS_GIVE_UP_AFTER_H`` after it.
    schedule_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("entry_id", "kind", name="uq_result_objects_entry_id_kind"),
        # The delivery loop's "what is due": pending rows by next attempt.
        Index("ix_result_objects_state_next_attempt_at", "state", "next_attempt_at"),
    )


class DriftCount(Base):
    """How many images of one day, scored by one model, fell in one bin of one measure.

    The drift watch's memory (:mod:`worker.drift_watch`): per UTC day and model version, the
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


class Role(StrEnum):
    """What a person may do on the review page; each role includes the ones before it."""

    READER = "reader"  # read the worklist and the cases
    REVIEWER = "reviewer"  # ... and record reviews
    ADMIN = "admin"  # ... and read the accounts and the audit trail (accounts are managed
    # with ``cxr-triage user``, by whoever holds the database owner's login)

    def allows(self, needed: Role) -> bool:
        order = list(Role)
        return order.index(self) >= order.index(needed)


class Account(Base):
    """One person (or one integration) who may log in to the review page.

    Never deleted: a person who leaves is disabled, so their name in ``review_history`` and
    ``audit_log`` keeps meaning one person. ``name`` is stored in lower case. The lock
    columns are the failed-login state (:mod:`db.accounts`): kept here, an account's lock
    cannot be pushed out of a memory table by other names, and it holds across restarts
    and every web process. The web's database login may update only those columns.
    """

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[Role] = mapped_column(_enum(Role, "role"))
    # An argon2id PHC string; None: no password (logs in only through the trusted proxy).
    password_hash: Mapped[str | None] = mapped_column(String(255))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    password_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # -- failed-login lock (written by the web login, web/throttle.py's rule)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AuditKind(StrEnum):
    """What an ``audit_log`` row records."""

    LOGIN = "login"  # a password or the trusted proxy accepted
    LOGIN_FAILED = "login_failed"  # a password checked and refused (or an unknown name)
    LOGIN_LOCKED = "login_locked"  # refused unchecked: the account or the client is locked
    LOGOUT = "logout"
    REVIEW = "review"  # a decision recorded on a worklist row
    ACCOUNT_ADDED = "account_added"
    PASSWORD_SET = "password_set"
    ROLE_SET = "role_set"
    ACCOUNT_DISABLED = "account_disabled"
    ACCOUNT_ENABLED = "account_enabled"
    ACCOUNT_UNLOCKED = "account_unlocked"


class AuditEvent(Base):
    """Who did what, when, from where: logins (accepted and refused), logouts, reviews and
    account changes. Append-only (the database refuses UPDATE and DELETE, migration 0008).

    ``account_id`` is the account the event is about (NULL: a name that matches no account;
    the typed name itself is never stored). ``actor`` is who acted: the account's name on the
    page and the API, ``cli:<os user>`` for ``cxr-triage user``. No patient data: a review
    names its row id and decision; the note stays in ``review_history``.
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    event: Mapped[AuditKind] = mapped_column(_enum(AuditKind, "event"))
    account_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), ForeignKey("accounts.id"), index=True
    )
    actor: Mapped[str] = mapped_column(String(128))
    via: Mapped[str] = mapped_column(String(16))  # form | basic | proxy | session | cli | env
    client: Mapped[str | None] = mapped_column(String(64))  # the peer's address
    worklist_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    detail: Mapped[str | None] = mapped_column(String(255))  # a phrase without patient data


class ServiceLease(Base):
    """Which process runs a service that must run once (the watcher of a share), and until
    when (:mod:`db.leadership`).

    The holder renews ``expires_at`` while it runs; a standby takes the lease once it has
    expired. ``term`` counts the hand-overs, so a log line or a reader can tell one holder's
    time from the next. No patient data.
    """

    __tablename__ = "service_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))  # host:pid:random of the process
    term: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), default=1)
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    renewed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
