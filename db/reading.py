"""The reading list: in which order a radiologist reads, defined once for every reader of it.

The rule (passive notification, as cleared triage devices work; BRIEF.md 7b):

1. **Tiers.** URGENT, then SUSPECT together with every image the device did not score for a
   reason of the image and every image not yet scored (unknown risk is not low risk), then
   ROUTINE (:mod:`db.reading_rule`, ``worklist.reading_tier``).
2. **Within a tier, oldest arrival first** (``received_at``, then ``id``): no case is ever
   overtaken by a newer case of its own tier. The arrival is the device's, never a date from
   the header, so a re-sent old study is a new arrival, not a jump ahead.
3. **The unit is the study.** Images with the same ``study_key`` (Study Instance UID, else
   accession number) *and* the same patient ID are one entry; two patients sharing a study
   UID or accession number by mistake stay two entries, both flagged ``identity_conflict``
   (merging them would put one child's images under another's name). Files without either
   identifier are an entry each. An entry is placed where its leading image would be on its
   own: the image first in (tier, arrival, id) among those the device reads. So an entry is
   placed by its most urgent image, and within that tier by the arrival of the first image
   that made it so; a later image can only raise it (a lower key), never lower it, and no
   entry overtakes one of its tier whose image at that tier arrived first.
4. **Files that are not the device's to read** (a CT, a lateral view, a hand) are never
   placed in the order: inside an entry they are "part of the study, not scored by design";
   an entry with no image the device reads is listed apart, by arrival.

Filters (:class:`Scope`) choose images first; the images chosen are grouped and ordered by
the rule. The view ``reading_list`` (migration 0006) is :func:`reading_list_view` compiled,
so a PACS/RIS-side tool reading the database gets the same order; ``tests/db/test_reading.py``
checks that the migration's SQL is this module's and that both give the same order.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Dialect,
    Select,
    and_,
    case,
    func,
    literal,
    select,
    tuple_,
)
from sqlalchemy.orm import QueryableAttribute, Session, aliased
from sqlalchemy.orm.util import AliasedClass

from db.models import Status, WorklistEntry
from db.reading_rule import APART, Tier

Rows = type[WorklistEntry] | AliasedClass[WorklistEntry]
Column = ColumnElement[Any] | QueryableAttribute[Any]


class ImageRole(StrEnum):
    """What an image is to its entry of the reading list."""

    LEADING = "leading"  # places the entry: its first image in (tier, arrival, id)
    IMAGE = "image"  # another image the device reads (scored, not analysed, in progress)
    NOT_SCORED_BY_DESIGN = "not_scored_by_design"  # part of the study, not the device's to read


@dataclass(frozen=True)
class Scope:
    """Which images the list is made of: still to read (the default) or reviewed too,
    narrowed by status, arrival, patient ID or accession number."""

    statuses: tuple[Status, ...] = ()
    since: datetime | None = None  # received at or after
    until: datetime | None = None  # received before
    patient_id: str | None = None
    accession_number: str | None = None
    include_reviewed: bool = False

    @classmethod
    def of(
        cls,
        *,
        statuses: Collection[Status] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        patient_id: str | None = None,
        accession_number: str | None = None,
        include_reviewed: bool = False,
    ) -> Scope:
        return cls(
            tuple(sorted(set(statuses or ()))),
            since,
            until,
            patient_id,
            accession_number,
            include_reviewed,
        )

    def conditions(self, rows: Rows) -> list[ColumnElement[bool]]:
        """This scope as WHERE terms on ``rows`` (the table or an alias of it)."""
        terms: list[ColumnElement[bool]] = []
        if self.statuses:
            terms.append(rows.status.in_(self.statuses))
        if self.since is not None:
            terms.append(rows.received_at >= self.since)
        if self.until is not None:
            terms.append(rows.received_at < self.until)
        if self.patient_id is not None:
            terms.append(rows.patient_id == self.patient_id)
        if self.accession_number is not None:
            terms.append(rows.accession_number == self.accession_number)
        if not self.include_reviewed:
            terms.append(rows.reviewed_at.is_(None))
        return terms


#: The reading list itself: every image still to read, nothing else narrowed.
TO_READ = Scope()


def _same_entry(a: Rows, b: Rows) -> ColumnElement[bool]:
    """``a`` and ``b`` are images of one study of one patient (never true without a key)."""
    return and_(
        a.study_key == b.study_key,
        func.coalesce(a.patient_id, "") == func.coalesce(b.patient_id, ""),
    )


def _order(rows: Rows) -> tuple[Column, ...]:
    """The reading order of images, and of entries by their leading image."""
    return (rows.reading_tier, rows.received_at, rows.id)


def _leading(rows: Rows, scope: Scope) -> ColumnElement[bool]:
    """``rows`` is the leading image of an entry of the reading list: an image the device
    reads, in scope, with no image of its entry (in scope) before it in reading order."""
    ahead = aliased(WorklistEntry, name="ahead")
    ahead_of_it = (
        select(ahead.id)
        .where(
            ahead.reading_tier.is_not(None),
            _same_entry(ahead, rows),
            tuple_(*_order(ahead)) < tuple_(*_order(rows)),
            *scope.conditions(ahead),
        )
        .exists()
    )
    return and_(rows.reading_tier.is_not(None), *scope.conditions(rows), ~ahead_of_it)


def _first_apart(rows: Rows, scope: Scope) -> ColumnElement[bool]:
    """``rows`` is the first file of an entry listed apart: not the device's to read, in
    scope, and its study has no image the device reads (in scope, reviewed or not: once a
    study has been read, its lateral is not listed again on its own)."""
    readable_image = aliased(WorklistEntry, name="readable")
    readable = (
        select(readable_image.id)
        .where(
            readable_image.reading_tier.is_not(None),
            _same_entry(readable_image, rows),
            *replace(scope, include_reviewed=True).conditions(readable_image),
        )
        .exists()
    )
    earlier_file = aliased(WorklistEntry, name="earlier")
    earlier = (
        select(earlier_file.id)
        .where(
            earlier_file.reading_tier.is_(None),
            _same_entry(earlier_file, rows),
            tuple_(earlier_file.received_at, earlier_file.id) < tuple_(rows.received_at, rows.id),
            *scope.conditions(earlier_file),
        )
        .exists()
    )
    return and_(rows.reading_tier.is_(None), *scope.conditions(rows), ~readable, ~earlier)


def leading_images(scope: Scope = TO_READ) -> Select[WorklistEntry]:
    """The leading image of each entry of the reading list, in reading order."""
    rows = WorklistEntry
    return select(rows).where(_leading(rows, scope)).order_by(*_order(rows))


def first_apart(scope: Scope = TO_READ) -> Select[WorklistEntry]:
    """The first file of each entry listed apart, oldest first."""
    rows = WorklistEntry
    return select(rows).where(_first_apart(rows, scope)).order_by(rows.received_at, rows.id)


# -- the views (migration 0006) -----------------------------------------------------------


def _tier_label(rows: Rows) -> ColumnElement[str]:
    return case(*((rows.reading_tier == tier.value, tier.label) for tier in Tier))


def _images(rows: Rows) -> ColumnElement[int]:
    """How many images still to read the entry holds (its leading image included)."""
    member = aliased(WorklistEntry, name="member")
    count = (
        select(func.count())
        .where(_same_entry(member, rows), *TO_READ.conditions(member))
        .scalar_subquery()
    )
    return case((rows.study_key.is_(None), 1), else_=count)


def _identity_conflict(rows: Rows) -> ColumnElement[bool]:
    """Another patient ID has an image with the same study key: kept apart, flagged."""
    other = aliased(WorklistEntry, name="other")
    return (
        select(other.id)
        .where(
            other.study_key == rows.study_key,
            func.coalesce(other.patient_id, "") != func.coalesce(rows.patient_id, ""),
        )
        .exists()
    )


def _entry_columns(rows: Rows) -> list[Column]:
    return [
        rows.id.label("entry_id"),
        rows.study_key,
        rows.patient_id,
        rows.accession_number,
        rows.study_instance_uid,
        rows.sop_instance_uid,
        rows.status,
        rows.priority,
        rows.probability,
        rows.label,
        rows.reason,
        rows.flags,
        rows.model_version,
        rows.received_at,
        _images(rows).label("images"),
        _identity_conflict(rows).label("identity_conflict"),
    ]


def reading_list_view() -> Select[*tuple[Any, ...]]:
    """The view ``reading_list``: one row per entry still to read, in reading order.

    The rows come in order (the view sorts by the index's columns, not by ``position``), so
    ``SELECT * FROM reading_list LIMIT 50`` is a walk of the first 50 entries down
    ``ix_worklist_reading_order``, and ``... WHERE position > 50 LIMIT 50`` the next page.
    ``ORDER BY position`` or ``WHERE position <= 50`` without a LIMIT make PostgreSQL number
    the whole list first (it cannot know that ``row_number()`` follows the index)."""
    rows = WorklistEntry
    position = func.row_number().over(order_by=_order(rows))
    return (
        select(position.label("position"), _tier_label(rows).label("tier"), *_entry_columns(rows))
        .where(_leading(rows, TO_READ))
        .order_by(*_order(rows))
    )


def reading_list_apart_view() -> Select[*tuple[Any, ...]]:
    """The view ``reading_list_apart``: one row per entry that is not the device's to read
    (no image of it is placed in the order), still to read, oldest first."""
    rows = WorklistEntry
    return (
        select(literal(APART).label("tier"), *_entry_columns(rows))
        .where(_first_apart(rows, TO_READ))
        .order_by(rows.received_at, rows.id)
    )


def view_sql(view: Select[*tuple[Any, ...]], dialect: Dialect) -> str:
    """``view`` as the SELECT of a ``CREATE VIEW`` in ``dialect`` (literal values inline)."""
    return str(view.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


# -- reading it ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadingEntry:
    """One entry of the reading list (or of the list apart): a study, or a file alone.

    ``images``: the leading image first, then the other images the device reads in reading
    order, then those not scored by design by arrival. ``position`` is 1 for the first entry
    to read in its list's scope; None for an entry listed apart.
    """

    position: int | None
    tier: str  # Tier label, or APART
    images: tuple[WorklistEntry, ...]
    identity_conflict: bool = False

    @property
    def leading(self) -> WorklistEntry:
        return self.images[0]

    def role(self, image: WorklistEntry) -> ImageRole:
        if image.reading_tier is None:
            return ImageRole.NOT_SCORED_BY_DESIGN
        return ImageRole.LEADING if image.id == self.leading.id else ImageRole.IMAGE


@dataclass(frozen=True)
class ReadingPage:
    """A page of the reading list and of the list apart: ``offset`` and ``limit`` page each
    list alike, so stepping through pages reaches every entry of both."""

    entries: list[ReadingEntry]
    total: int  # entries in the reading list (this scope)
    apart: list[ReadingEntry]
    apart_total: int  # entries listed apart (this scope)
    offset: int = 0
    limit: int | None = None
    images: list[WorklistEntry] = field(init=False)

    def __post_init__(self) -> None:
        every = [image for entry in (*self.entries, *self.apart) for image in entry.images]
        object.__setattr__(self, "images", every)


def reading_list(
    session: Session,
    scope: Scope = TO_READ,
    *,
    offset: int = 0,
    limit: int | None = 50,
    count: bool = True,
) -> ReadingPage:
    """Entries ``offset + 1`` to ``offset + limit`` of the reading list and of the list apart,
    each with its images, and how many entries each list has (``count=False`` skips the two
    counts, which walk the whole list, and reports the entries returned)."""
    if offset < 0 or (limit is not None and limit < 0):
        raise ValueError(f"offset and limit are counts: {offset}, {limit}")
    leading = list(session.scalars(leading_images(scope).offset(offset).limit(limit)))
    firsts = list(session.scalars(first_apart(scope).offset(offset).limit(limit)))
    members = _members(session, scope, [*leading, *firsts])
    conflicts = _conflicts(session, [*leading, *firsts])
    entries = [
        ReadingEntry(
            offset + number,
            Tier(image.reading_tier).label,
            _ordered(image, members),
            _key(image) in conflicts,
        )
        for number, image in enumerate(leading, start=1)
        if image.reading_tier is not None
    ]
    apart = [
        ReadingEntry(None, APART, _ordered(image, members), _key(image) in conflicts)
        for image in firsts
    ]
    if count:
        total = _count(session, leading_images(scope))
        apart_total = _count(session, first_apart(scope))
    else:
        total, apart_total = offset + len(entries), offset + len(apart)
    return ReadingPage(entries, total, apart, apart_total, offset, limit)


def _count(session: Session, query: Select[WorklistEntry]) -> int:
    counted = query.order_by(None).with_only_columns(func.count(), maintain_column_froms=True)
    return int(session.scalar(counted) or 0)


Key = tuple[str, str]


def _key(image: WorklistEntry) -> Key | None:
    if image.study_key is None:
        return None
    return (image.study_key, image.patient_id or "")


def _members(
    session: Session, scope: Scope, firsts: Sequence[WorklistEntry]
) -> dict[Key, list[WorklistEntry]]:
    """The images in scope of the entries led by ``firsts``, by entry key."""
    study_keys = {image.study_key for image in firsts if image.study_key is not None}
    if not study_keys:
        return {}
    found: dict[Key, list[WorklistEntry]] = {}
    query = select(WorklistEntry).where(
        WorklistEntry.study_key.in_(sorted(study_keys)), *scope.conditions(WorklistEntry)
    )
    for image in session.scalars(query):
        key = _key(image)
        if key is not None:
            found.setdefault(key, []).append(image)
    return found


def _ordered(
    first: WorklistEntry, members: dict[Key, list[WorklistEntry]]
) -> tuple[WorklistEntry, ...]:
    key = _key(first)
    images = members.get(key, [first]) if key is not None else [first]
    return tuple(sorted(images, key=_image_order))


def _image_order(image: WorklistEntry) -> tuple[bool, int, datetime, int]:
    """Images the device reads in reading order, then the others by arrival."""
    tier = image.reading_tier
    return (tier is None, tier if tier is not None else 0, image.received_at, image.id)


def _conflicts(session: Session, firsts: Sequence[WorklistEntry]) -> set[Key]:
    """The keys of ``firsts`` whose study key is also another patient's."""
    study_keys = {image.study_key for image in firsts if image.study_key is not None}
    if not study_keys:
        return set()
    patients = func.coalesce(WorklistEntry.patient_id, "")
    shared = set(
        session.scalars(
            select(WorklistEntry.study_key)
            .where(WorklistEntry.study_key.in_(sorted(study_keys)))
            .group_by(WorklistEntry.study_key)
            .having(func.count(func.distinct(patients)) > 1)
        )
    )
    return {key for image in firsts if (key := _key(image)) is not None and key[0] in shared}


def next_to_read(session: Session, after_id: int) -> WorklistEntry | None:
    """The leading image of the first entry still to read that does not hold ``after_id``
    (after a review, the next case; from a case page, the case after it)."""
    for entry in reading_list(session, TO_READ, limit=2, count=False).entries:
        if after_id not in {image.id for image in entry.images}:
            return entry.leading
    return None


def entry_position(session: Session, image_id: int, scope: Scope = TO_READ) -> int | None:
    """The place (1 is read first) in ``scope``'s reading list of the entry that holds the
    image ``image_id``; None when no entry of that list holds it (reviewed, filtered out,
    not the device's to read, or unknown). For the review page's previous/next case: it
    counts the entries ahead down ``ix_worklist_reading_order`` (the order is this module's,
    never re-stated)."""
    image = session.get(WorklistEntry, image_id)
    if image is None:
        return None
    rows = WorklistEntry
    query = leading_images(scope)
    if image.study_key is None:
        query = query.where(rows.id == image.id)
    else:
        query = query.where(
            rows.study_key == image.study_key,
            func.coalesce(rows.patient_id, "") == (image.patient_id or ""),
        )
    leading = session.scalars(query.limit(1)).first()
    if leading is None:
        return None
    ahead = leading_images(scope).where(
        # a tuple of values takes each column's type (UTC times bound as stored)
        tuple_(*_order(rows)) < tuple(getattr(leading, str(column.key)) for column in _order(rows))
    )
    return _count(session, ahead) + 1
