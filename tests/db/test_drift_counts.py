"""The drift counts: added with one upsert per bin, read back per day and model version, and
pooled over the drift watch's window."""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import Engine, event
from sqlalchemy.engine.interfaces import CacheStats
from sqlalchemy.orm import Session, sessionmaker

from db.drift_counts import WINDOW_DAYS, add_counts, counts_since, window_counts
from db.models import utcnow

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


def test_batches_of_any_size_add_with_one_cached_statement(
    sessions: sessionmaker[Session], engine: Engine
) -> None:
    """Every batch has its own number of bins: still the same statement, compiled once."""
    with sessions.begin() as session:
        add_counts(session, TODAY, "m-1", {("score", 1): 1, ("score", 9): 1})
    cached: list[bool] = []

    def hit(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        cached.append(context.cache_hit is CacheStats.CACHE_HIT)

    event.listen(engine, "before_cursor_execute", hit)
    with sessions.begin() as session:
        add_counts(session, TODAY, "m-1", {("score", 1): 2, ("score", 2): 1, ("priority", 0): 3})
        add_counts(session, TODAY, "m-1", {("score", 2): 1, ("content", 4): 1})
    assert cached == [True, True]
    with sessions() as session:
        counts = counts_since(session, TODAY)[(TODAY, "m-1")]
    assert counts == {
        ("score", 1): 3,
        ("score", 2): 2,
        ("score", 9): 1,
        ("priority", 0): 3,
        ("content", 4): 1,
    }


def test_the_window_pools_the_last_seven_days_of_one_model(
    sessions: sessionmaker[Session],
) -> None:
    """Today and the six days before it count, the seventh day back does not; another
    model's counts never mix in. The worker and the review page both read this window."""
    today = utcnow().date()
    with sessions.begin() as session:
        add_counts(session, today, "m-1", {("score", 3): 1, ("priority", 0): 1})
        add_counts(session, today - timedelta(days=6), "m-1", {("score", 3): 2})
        add_counts(session, today - timedelta(days=7), "m-1", {("score", 3): 40})
        add_counts(session, today, "m-2", {("score", 3): 50})
    with sessions() as session:
        window = window_counts(session, "m-1")
        two_days = window_counts(session, "m-1", days=2)
    assert WINDOW_DAYS == 7
    assert (window.first_day, window.days) == (today - timedelta(days=6), 7)
    assert window.bins == {("score", 3): 3, ("priority", 0): 1}
    assert (two_days.first_day, two_days.bins) == (
        today - timedelta(days=1),
        {("score", 3): 1, ("priority", 0): 1},
    )
