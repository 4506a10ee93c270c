"""The drift counts: added with one upsert per bin, read back per day and model version."""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy.orm import Session, sessionmaker

from db.drift import add_counts, counts_since

TODAY = date(2026, 11, 29)


def test_counts_accumulate_per_day_model_and_bin(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        add_counts(session, TODAY, "m-1", {("score", 3): 2, ("priority", 0): 2})
    with sessions.begin() as session:  # a second batch, same day: added, not replaced
        add_counts(session, TODAY, "m-1", {("score", 3): 1, ("score", 49): 4, ("content", 2): 0})
        add_counts(session, TODAY, "m-2", {("score", 3): 7})
        add_counts(session, TODAY - timedelta(days=9), "m-1", {("score", 3): 5})
    with sessions() as session:
        recent = counts_since(session, TODAY - timedelta(days=6), "m-1")
        everything = counts_since(session, TODAY - timedelta(days=30))
    assert recent == {(TODAY, "m-1"): {("score", 3): 3, ("score", 49): 4, ("priority", 0): 2}}
    assert set(everything) == {
        (TODAY, "m-1"),
        (TODAY, "m-2"),
        (TODAY - timedelta(days=9), "m-1"),
    }


def test_a_rolled_back_batch_counts_nothing(sessions: sessionmaker[Session]) -> None:
    """The pipeline counts in the transaction that stores the rows: no rows, no counts."""
    session = sessions()
    with session.begin():
        add_counts(session, TODAY, "m-1", {("score", 1): 1})
        session.rollback()
    with sessions() as fresh:
        assert counts_since(fresh, TODAY) == {}


def test_nothing_to_add_is_a_no_op(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        add_counts(session, TODAY, "m-1", {})
    with sessions() as session:
        assert counts_since(session, TODAY) == {}
