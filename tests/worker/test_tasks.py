"""The two tasks' retry rule, written once (worker.tasks.RetriedTask): transient errors are
retried with backoff and jitter, bad input never; each task keeps its own limits. A triage
task holds its rows for its retry (worker.tasks.TriageTask)."""

from __future__ import annotations

from pathlib import Path

import pytest
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from db.models import WorklistEntry, utcnow
from db.worklist import Arrival, admit, claim_autocommit
from ingest.errors import IngestError
from worker.resources import ModelUnavailableError, after_fork
from worker.settings import get_settings
from worker.tasks import TRANSIENT_ERRORS, RetriedTask, publish, triage


@pytest.mark.parametrize(
    ("task", "backoff_max_s", "max_retries"), [(triage, 300, 30), (publish, 120, 10)]
)
def test_each_task_retries_transient_errors_with_backoff_within_its_own_limits(
    task: RetriedTask, backoff_max_s: int, max_retries: int
) -> None:
    assert isinstance(task, RetriedTask)
    assert task.autoretry_for == TRANSIENT_ERRORS
    assert (task.retry_backoff, task.retry_jitter) == (2, True)
    assert (task.retry_backoff_max, task.max_retries) == (backoff_max_s, max_retries)
    assert hasattr(task, "_orig_run"), "Celery wrapped the task body in its autoretry"


def test_outages_are_transient_and_bad_input_is_not() -> None:
    for error in (OperationalError, BrokerError, ModelUnavailableError, OSError):
        assert issubclass(error, TRANSIENT_ERRORS)
    assert not issubclass(IngestError, TRANSIENT_ERRORS)


def test_a_triage_retry_holds_its_rows_only_when_a_retry_follows(
    tmp_path: Path, database_url: str, sessions: sessionmaker[Session], monkeypatch
) -> None:
    """``TriageTask.retry`` lets the rows go (``claimed_by`` cleared, leased past the retry)
    only when Celery will send a retry: not when the task was called directly, nor once its
    retries are spent (Celery then raises the error; the rows wait for a lease keeper, and a
    let-go row would have kept a long lease and been taken over uncounted for nothing)."""
    monkeypatch.setenv("CXR_DATABASE_URL", database_url)
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    after_fork()
    try:
        with sessions.begin() as session:
            entry, _ = admit(session, Arrival("a" * 64, "a.png", str(tmp_path / "a.png")))
            entry_id = entry.id
        claim_autocommit(
            sessions, entry_id, "task-x", batch_size=1, stale_before=utcnow(), claimed_by="n:1"
        )
        with pytest.raises(OSError, match="share"):  # called directly: no worker, no retry
            triage.retry(exc=OSError("share"), countdown=5)
        triage.push_request(id="task-x", retries=triage.max_retries, called_directly=False)
        try:
            with pytest.raises(OSError, match="share"):  # the last retry spent
                triage.retry(exc=OSError("share"), countdown=5)
        finally:
            triage.pop_request()
        with sessions() as session:
            row = session.get(WorklistEntry, entry_id)
            assert row is not None and row.claimed_by == "n:1"
    finally:
        get_settings.cache_clear()
        after_fork()
