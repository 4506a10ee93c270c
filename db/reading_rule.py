"""The reading-order rule's two per-image facts, as SQL the database computes for every row.

- ``reading_tier``: the tier an image puts its study in. 0 URGENT, 1 SUSPECT, 2 ROUTINE for a
  scored image (by its ``priority_rank``); 1 for an image still queued or processing (not yet
  known) and for one left unscored for a reason of the image (refused by the content check,
  unreadable, failed: unknown risk is not low risk); NULL for a file that is not the
  device's to read (a CT, a lateral view, a hand: :data:`ingest.errors.NOT_FOR_DEVICE_REASONS`),
  which is listed apart and never placed in the order.
- ``study_key``: what makes images one entry of the reading list, with the patient ID beside
  it (:mod:`db.reading`): ``uid:`` and the Study Instance UID, else ``acc:`` and the
  accession number, else NULL (the file is an entry of its own). The prefixes keep a UID and
  an accession number that happen to be spelt alike apart.

Both are generated columns (``GENERATED ALWAYS AS ... STORED`` on PostgreSQL, virtual on
SQLite), so no writer can forget them and the order can be served by an index; the
expressions here are the one definition, frozen by migration 0006 (a test compares them).
Changing which reasons are listed apart therefore takes a migration that recreates the
column; a new reason of the image needs none (an unknown value reads as unknown risk).
"""

from __future__ import annotations

from enum import IntEnum

from sqlalchemy import ColumnElement, SmallInteger, String, case, column, literal, null

from ingest.errors import NOT_FOR_DEVICE_REASONS


class Tier(IntEnum):
    """The tiers of the reading list, read in this order (the value is ``reading_tier``)."""

    URGENT = 0
    SUSPECT = 1  # with every image not analysed for a reason of its own, and those in progress
    ROUTINE = 2

    @property
    def label(self) -> str:
        return self.name.lower()


#: What the reading list calls an entry that has no image the device reads (``tier``).
APART = "apart"

#: The longest ``study_key``: the prefix and a 64-character UID (PS3.5 VR UI).
STUDY_KEY_LENGTH = 68

_status = column("status", String)
_rank = column("priority_rank", SmallInteger)
_reason = column("reason", String)
_study_uid = column("study_instance_uid", String)
_accession = column("accession_number", String)

#: ``worklist.reading_tier`` (see the module docstring). A scored row of a rank this version
#: does not know reads as SUSPECT rather than vanishing from the order.
READING_TIER: ColumnElement[int] = case(
    (
        _status == "done",
        case(
            (_rank == Tier.URGENT.value, Tier.URGENT.value),
            (_rank == Tier.ROUTINE.value, Tier.ROUTINE.value),
            else_=Tier.SUSPECT.value,
        ),
    ),
    (_status.in_(["queued", "processing"]), Tier.SUSPECT.value),
    (_reason.in_(sorted(NOT_FOR_DEVICE_REASONS)), null()),
    else_=Tier.SUSPECT.value,
)

#: ``worklist.study_key`` (see the module docstring). Empty strings count as absent.
STUDY_KEY: ColumnElement[str] = case(
    (_study_uid != "", literal("uid:") + _study_uid),
    (_accession != "", literal("acc:") + _accession),
    else_=null(),
)
