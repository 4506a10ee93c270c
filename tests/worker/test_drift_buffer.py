"""The worker's drift counts, buffered per process and written every few seconds, on
SQLite and PostgreSQL: the same totals as counting in each task's transaction, none lost to
a database outage, the rest written by a clean stop."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.drift_counts import counts_since
from db.engine import make_engine, make_session_factory
from db.models import DriftCount, utcnow
from model.prediction import Label, Prediction, Priority
from tests.support import free_port, wait_until
from worker import drift_watch
from worker.drift_watch import DriftBuffer
from worker.outcomes import Scored

URGENT = Prediction(0.87, Label.PNEUMONIA, Priority.URGENT, 0.5, "fake-1.0")
ROUTINE = Prediction(0.02, Label.NORMAL, Priority.ROUTINE, 0.5, "fake-1.0")


def _outcomes(start: int, count: int) -> list[Scored]:
    return [
        Scored(n, Path(f"archive/{n}"), URGENT if n % 3 else ROUTINE)
        for n in range(start, start + count)
    ]


def _table(sessions: sessionmaker[Session]) -> dict[tuple[str, int], int]:
    with sessions() as session:
        found = counts_since(session, utcnow().date())
    return found.get((utcnow().date(), "fake-1.0"), {})


def test_buffered_counts_equal_counts_in_the_transaction(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    reference = make_session_factory(make_engine(f"sqlite:///{tmp_path / 'ref.sqlite3'}"))
    from db import migrate

    migrate.upgrade(f"sqlite:///{tmp_path / 'ref.sqlite3'}")
    buffer = DriftBuffer(sessions, flush_s=3600)
    batches = [_outcomes(n * 8, 8) for n in range(20)]
    threads = [threading.Thread(target=buffer.add, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for batch in batches:  # what counting in each task's transaction stores
        with reference.begin() as session:
            drift_watch.record(session, batch)
    assert _table(sessions) == {}, "nothing written before a flush"
    assert buffer.flush() == 1
    assert _table(sessions) == _table(reference) != {}
    with sessions() as session:  # one row per bin, not one per batch
        assert session.scalar(select(func.count()).select_from(DriftCount)) == len(
            _table(reference)
        )


def test_counts_survive_a_database_outage_and_a_clean_stop_writes_the_rest(
    sessions: sessionmaker[Session],
) -> None:
    down = make_session_factory(make_engine(f"postgresql+psycopg://cxr@127.0.0.1:{free_port()}/x"))
    buffer = DriftBuffer(down, flush_s=3600)
    buffer.add(_outcomes(0, 10))
    assert buffer.flush() == 0, "the database is down: kept"
    buffer.sessions = sessions  # the database is back
    buffer.add(_outcomes(10, 5))
    buffer.close()
    assert sum(n for (measure, _), n in _table(sessions).items() if measure == "priority") == 15


def test_the_buffer_writes_by_itself_every_flush_interval(
    sessions: sessionmaker[Session],
) -> None:
    buffer = DriftBuffer(sessions, flush_s=0.2)
    buffer.add(_outcomes(0, 4))
    wait_until(lambda: _table(sessions) != {}, 5, "the periodic flush")
    buffer.close()
