"""The reading list (db/reading.py) on SQLite and PostgreSQL: tiers, arrival order, studies,
the list apart, paging, and the views of migration 0006 against the code that defines them.

Rows go in through the storage functions the worker uses (admit, claim, record_final).
"""

from __future__ import annotations

import importlib.util
from datetime import timedelta
from pathlib import Path
from types import ModuleType

import pytest
from sqlalchemy import text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from db.models import ReviewDecision, Status, WorklistEntry, utcnow
from db.reading import (
    TO_READ,
    ImageRole,
    ReadingPage,
    Scope,
    next_to_read,
    reading_list,
    reading_list_apart_view,
    reading_list_view,
    view_sql,
)
from db.reading_rule import READING_TIER, STUDY_KEY
from db.worklist import Arrival, Final, ScoreValues, admit, claim, record_final, review
from ingest.errors import Disposition, Reason, disposition
from worker.outcomes import WORKER_REASONS

Sessions = sessionmaker[Session]
MIGRATION = Path(__file__).parents[2] / "db/migrations/versions/0006_reading_list.py"
PRIORITIES = ("urgent", "suspect", "routine")


def add(sessions: Sessions, n: int, **identity: str | None) -> int:
    with sessions.begin() as session:
        entry, created = admit(
            session,
            Arrival(f"{n:064x}", f"f{n}.dcm", f"/inbox/f{n}.dcm", "dicom", **identity),  # type: ignore[arg-type]
        )
        assert created
        return entry.id


def finish(sessions: Sessions, final: Final) -> None:
    token = f"task-{final.entry_id}"
    with sessions.begin() as session:
        assert claim(
            session, final.entry_id, token, batch_size=1, claimed_by="host:1", stale_before=utcnow()
        )
        assert record_final(session, token, [final]) == [final.entry_id]


def score(sessions: Sessions, entry_id: int, rank: int, probability: float = 0.5) -> None:
    scored = ScoreValues(probability, "pneumonia", PRIORITIES[rank], rank, 0.5, "m1")
    finish(sessions, Final(entry_id, Status.DONE, "/archive/x", scored))


def refuse(sessions: Sessions, entry_id: int, reason: str) -> None:
    status = Status.FAILED if reason in WORKER_REASONS else Status.REJECTED
    finish(sessions, Final(entry_id, status, f"/q/{reason}", reason=reason, detail="why"))


def page(sessions: Sessions, scope: Scope = TO_READ, **kwargs: int) -> ReadingPage:
    with sessions() as session:
        return reading_list(session, scope, **kwargs)


def order(sessions: Sessions) -> list[list[int]]:
    """The reading list as the image ids of each entry, leading image first."""
    return [[image.id for image in entry.images] for entry in page(sessions).entries]


def apart(sessions: Sessions) -> list[list[int]]:
    return [[image.id for image in entry.images] for entry in page(sessions).apart]


def view(sessions: Sessions) -> list[tuple[int, str, int, int]]:
    """``reading_list`` as a PACS-side tool reads it: (position, tier, entry_id, images)."""
    with sessions() as session:
        rows = session.execute(text("SELECT position, tier, entry_id, images FROM reading_list"))
        return [tuple(row) for row in rows]  # type: ignore[misc]


# -- the rule in the database is the rule in ingest/errors.py --------------------------------


def test_the_database_tiers_every_reason_as_ingest_errors_says(sessions: Sessions) -> None:
    reasons = sorted({r.value for r in Reason} | {"from_a_later_version"})
    ids = {reason: add(sessions, n) for n, reason in enumerate(reasons)}
    for reason, entry_id in ids.items():
        refuse(sessions, entry_id, reason)
    scored = {rank: add(sessions, 100 + rank) for rank in (0, 1, 2)}
    for rank, entry_id in scored.items():
        score(sessions, entry_id, rank)
    waiting, processing = add(sessions, 200), add(sessions, 201)
    with sessions.begin() as session:
        claim(session, processing, "t", batch_size=1, claimed_by="host:1", stale_before=utcnow())
    odd = add(sessions, 202)  # a rank this version does not know: never out of the order
    score(sessions, odd, 2)
    with sessions.begin() as session:
        session.execute(
            update(WorklistEntry).where(WorklistEntry.id == odd).values(priority_rank=7)
        )
    with sessions() as session:
        tier = {e.id: e.reading_tier for e in session.query(WorklistEntry)}
    for reason, entry_id in ids.items():
        listed_apart = disposition(reason) is Disposition.NOT_FOR_DEVICE
        assert tier[entry_id] == (None if listed_apart else 1), reason
    assert [tier[scored[rank]] for rank in (0, 1, 2)] == [0, 1, 2]
    assert (tier[waiting], tier[processing], tier[odd]) == (1, 1, 1)


def _migration() -> ModuleType:
    spec = importlib.util.spec_from_file_location("migration_0006", MIGRATION)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _flat(sql: str) -> str:
    return " ".join(sql.split())


@pytest.mark.parametrize("dialect", [postgresql.dialect(), sqlite.dialect()], ids=["pg", "sqlite"])
def test_migration_0006_is_the_code_that_defines_the_rule(dialect: object) -> None:
    """The views and generated columns the migration created are db/reading.py and
    db/reading_rule.py compiled: a change to the rule without a new migration fails here."""
    migration = _migration()
    assert _flat(view_sql(reading_list_view(), dialect)) == _flat(migration.READING_LIST)  # type: ignore[arg-type]
    assert _flat(view_sql(reading_list_apart_view(), dialect)) == _flat(  # type: ignore[arg-type]
        migration.READING_LIST_APART
    )
    for expression, frozen in (
        (READING_TIER, migration.READING_TIER),
        (STUDY_KEY, migration.STUDY_KEY),
    ):
        compiled = expression.compile(dialect=dialect, compile_kwargs={"literal_binds": True})  # type: ignore[arg-type]
        assert _flat(str(compiled)) == _flat(frozen)


# -- tiers and arrival -------------------------------------------------------------------------


def test_an_older_urgent_case_is_never_overtaken_by_a_newer_one(sessions: Sessions) -> None:
    """In a flood the first urgent child waited longest (issue 19): probability no longer
    orders a tier, arrival does."""
    older, newer = add(sessions, 1), add(sessions, 2)
    score(sessions, newer, 0, probability=0.999)  # scored first, and surer
    score(sessions, older, 0, probability=0.71)
    assert order(sessions) == [[older], [newer]]


def test_a_film_not_analysed_is_read_with_suspect_before_every_routine(sessions: Sessions) -> None:
    routine = add(sessions, 1)
    refused = add(sessions, 2)  # a child's film the content check refused
    suspect = add(sessions, 3)
    lateral = add(sessions, 4)
    failed = add(sessions, 5)
    queued = add(sessions, 6)
    score(sessions, routine, 2)
    refuse(sessions, refused, "not_chest_radiograph")
    score(sessions, suspect, 1)
    refuse(sessions, lateral, "lateral_view")
    refuse(sessions, failed, "too_many_attempts")
    assert order(sessions) == [[refused], [suspect], [failed], [queued], [routine]]
    assert apart(sessions) == [[lateral]]
    listed = page(sessions)
    assert [entry.tier for entry in listed.entries] == ["suspect"] * 4 + ["routine"]
    assert [entry.position for entry in listed.entries] == [1, 2, 3, 4, 5]
    assert (listed.total, listed.apart_total) == (5, 1)
    assert listed.apart[0].tier == "apart" and listed.apart[0].position is None
    assert [row[:3] for row in view(sessions)] == [
        (1, "suspect", refused),
        (2, "suspect", suspect),
        (3, "suspect", failed),
        (4, "suspect", queued),
        (5, "routine", routine),
    ]


def test_arrival_is_the_device_s_not_the_order_of_the_ids(sessions: Sessions) -> None:
    """Watchers on several hosts stamp ``received_at`` with their own clocks: the earlier
    arrival is read first even when its row was written second."""
    first_written, second_written = add(sessions, 1), add(sessions, 2)
    for entry_id in (first_written, second_written):
        score(sessions, entry_id, 0)
    with sessions.begin() as session:
        session.execute(
            update(WorklistEntry)
            .where(WorklistEntry.id == second_written)
            .values(received_at=utcnow() - timedelta(minutes=5))
        )
    assert order(sessions) == [[second_written], [first_written]]
    assert [row[2] for row in view(sessions)] == [second_written, first_written]


# -- studies -----------------------------------------------------------------------------------

STUDY = {"study_instance_uid": "1.2.826.0.1.3680043.10.1", "patient_id": "P1"}


def test_a_pa_and_its_lateral_are_one_entry_placed_by_the_pa(sessions: Sessions) -> None:
    earlier_routine = add(sessions, 1)
    lateral = add(sessions, 2, **STUDY)  # arrives first, is not the device's to read
    pa = add(sessions, 3, **STUDY)
    score(sessions, earlier_routine, 2)
    refuse(sessions, lateral, "lateral_view")
    score(sessions, pa, 1)
    listed = page(sessions)
    assert [[image.id for image in e.images] for e in listed.entries] == [
        [pa, lateral],
        [earlier_routine],
    ]
    study = listed.entries[0]
    assert study.tier == "suspect" and study.leading.id == pa
    assert [study.role(image) for image in study.images] == [
        ImageRole.LEADING,
        ImageRole.NOT_SCORED_BY_DESIGN,
    ]
    assert listed.apart == [] and listed.total == 2
    assert view(sessions) == [(1, "suspect", pa, 2), (2, "routine", earlier_routine, 1)]


def test_a_second_pa_moves_its_study_up_never_down(sessions: Sessions) -> None:
    urgent_before = add(sessions, 1)
    pa = add(sessions, 2, **STUDY)
    routine_after = add(sessions, 3)
    score(sessions, urgent_before, 0)
    score(sessions, pa, 2)
    score(sessions, routine_after, 2)
    assert order(sessions) == [[urgent_before], [pa], [routine_after]]

    second = add(sessions, 4, **STUDY)  # not yet known: unknown risk, never lower
    assert order(sessions) == [[urgent_before], [second, pa], [routine_after]]
    score(sessions, second, 2)  # as routine as the first: the study keeps its place
    assert order(sessions) == [[urgent_before], [pa, second], [routine_after]]

    third = add(sessions, 5, **STUDY)
    score(sessions, third, 0)  # urgent: the study goes up, behind the older urgent case
    assert order(sessions) == [[urgent_before], [third, pa, second], [routine_after]]
    assert [row[:3] for row in view(sessions)] == [
        (1, "urgent", urgent_before),
        (2, "urgent", third),
        (3, "routine", routine_after),
    ]

    fourth = add(sessions, 6, **STUDY)
    score(sessions, fourth, 2)  # routine after urgent: never down
    assert order(sessions)[1][0] == third and page(sessions).entries[1].tier == "urgent"


def test_two_patients_sharing_a_study_uid_are_never_merged(sessions: Sessions) -> None:
    """A study UID or accession number reused by mistake must not put one child's images
    under another's name: two entries, both flagged."""
    uid = STUDY["study_instance_uid"]
    first = add(sessions, 1, study_instance_uid=uid, patient_id="P1")
    other = add(sessions, 2, study_instance_uid=uid, patient_id="P2")
    unnamed = add(sessions, 3, study_instance_uid=uid)  # no patient ID: not P1 either
    by_accession = add(sessions, 4, accession_number="ACC7", patient_id="P1")
    other_accession = add(sessions, 5, accession_number="ACC7", patient_id="P3")
    alone = add(sessions, 6, study_instance_uid="1.2.3.9", patient_id="P1")
    for entry_id in (first, other, unnamed, by_accession, other_accession, alone):
        score(sessions, entry_id, 1)
    listed = page(sessions)
    assert [[image.id for image in e.images] for e in listed.entries] == [
        [first],
        [other],
        [unnamed],
        [by_accession],
        [other_accession],
        [alone],
    ]
    assert [e.identity_conflict for e in listed.entries] == [True] * 5 + [False]
    with sessions() as session:
        flagged = session.execute(text("SELECT entry_id, identity_conflict FROM reading_list"))
        assert {entry_id: bool(flag) for entry_id, flag in flagged} == {
            e.leading.id: e.identity_conflict for e in listed.entries
        }


def test_the_accession_number_groups_files_without_a_study_uid(sessions: Sessions) -> None:
    a = add(sessions, 1, accession_number="ACC1", patient_id="P1")
    b = add(sessions, 2, accession_number="ACC1", patient_id="P1")
    uid_spelt_alike = add(sessions, 3, study_instance_uid="ACC1", patient_id="P1")
    jpeg_1, jpeg_2 = add(sessions, 4), add(sessions, 5)  # no identity: an entry each
    for entry_id in (a, b, uid_spelt_alike, jpeg_1, jpeg_2):
        score(sessions, entry_id, 2)
    assert order(sessions) == [[a, b], [uid_spelt_alike], [jpeg_1], [jpeg_2]]


def test_a_study_with_nothing_for_the_device_is_listed_apart_whole(sessions: Sessions) -> None:
    ct = {"study_instance_uid": "1.2.3.4", "patient_id": "P5"}
    first, second = add(sessions, 1, **ct), add(sessions, 2, **ct)
    hand = add(sessions, 3)
    refuse(sessions, first, "wrong_modality")
    refuse(sessions, second, "wrong_modality")
    refuse(sessions, hand, "not_chest")
    assert order(sessions) == []
    assert apart(sessions) == [[first, second], [hand]]
    with sessions() as session:
        rows = session.execute(text("SELECT tier, entry_id, images FROM reading_list_apart"))
        assert [tuple(row) for row in rows] == [("apart", first, 2), ("apart", hand, 1)]


def test_a_study_read_is_not_listed_again_and_a_resent_one_is_a_new_arrival(
    sessions: Sessions,
) -> None:
    lateral, pa = add(sessions, 1, **STUDY), add(sessions, 2, **STUDY)
    refuse(sessions, lateral, "lateral_view")
    score(sessions, pa, 0)
    newer_urgent = add(sessions, 3)
    score(sessions, newer_urgent, 0)
    with sessions.begin() as session:
        review(session, pa, ReviewDecision.AGREE, "dr-x")
    # read: its lateral does not come back on its own, in the list or apart
    assert order(sessions) == [[newer_urgent]] and apart(sessions) == []
    resent = add(sessions, 4, **STUDY)  # the same study sent again, new instances
    score(sessions, resent, 0)
    # a new arrival: behind the urgent case that arrived before it, with the lateral
    assert order(sessions) == [[newer_urgent], [resent, lateral]]
    everything = page(sessions, Scope.of(include_reviewed=True))
    assert [[i.id for i in e.images] for e in everything.entries] == [
        [pa, resent, lateral],
        [newer_urgent],
    ]


# -- paging, filters, next ---------------------------------------------------------------------


def test_pages_reach_every_entry_once_and_count_them(sessions: Sessions) -> None:
    ids = [add(sessions, n) for n in range(12)]
    for n, entry_id in enumerate(ids):
        if n % 4 == 3:
            refuse(sessions, entry_id, "not_chest")
        else:
            score(sessions, entry_id, n % 3)
    whole = page(sessions, limit=100)
    seen, apart_seen = [], []
    for offset in range(0, 12, 5):
        one = page(sessions, offset=offset, limit=5)
        assert (one.total, one.apart_total) == (whole.total, whole.apart_total) == (9, 3)
        assert [e.position for e in one.entries] == list(
            range(offset + 1, offset + 1 + len(one.entries))
        )
        seen += [e.leading.id for e in one.entries]
        apart_seen += [e.leading.id for e in one.apart]
    assert seen == [e.leading.id for e in whole.entries]
    assert apart_seen == [e.leading.id for e in whole.apart]
    assert sorted(seen + apart_seen) == sorted(ids)
    with pytest.raises(ValueError, match="counts"):
        page(sessions, offset=-1)


def test_filters_choose_images_and_the_rule_orders_them(sessions: Sessions) -> None:
    pa = add(sessions, 1, **STUDY)
    lateral = add(sessions, 2, **STUDY)
    other = add(sessions, 3, patient_id="P2")
    score(sessions, pa, 2)
    refuse(sessions, lateral, "lateral_view")
    score(sessions, other, 0)
    by_patient = page(sessions, Scope.of(patient_id="P1"))
    assert [[i.id for i in e.images] for e in by_patient.entries] == [[pa, lateral]]
    rejected = page(sessions, Scope.of(statuses=[Status.REJECTED]))
    assert rejected.entries == [] and [e.leading.id for e in rejected.apart] == [lateral]
    later = page(sessions, Scope.of(since=utcnow() + timedelta(minutes=1)))
    assert (later.total, later.apart_total) == (0, 0)


def test_next_to_read_is_the_next_entry_not_another_image_of_this_one(sessions: Sessions) -> None:
    pa, lateral = add(sessions, 1, **STUDY), add(sessions, 2, **STUDY)
    after = add(sessions, 3)
    score(sessions, pa, 0)
    refuse(sessions, lateral, "lateral_view")
    score(sessions, after, 1)
    with sessions() as session:
        assert next_to_read(session, pa).id == after  # type: ignore[union-attr]
        assert next_to_read(session, lateral).id == after  # type: ignore[union-attr]
        assert next_to_read(session, after).id == pa  # type: ignore[union-attr]
    with sessions.begin() as session:
        review(session, after, ReviewDecision.ACKNOWLEDGED, "dr-x")
    with sessions() as session:
        assert next_to_read(session, pa) is None
