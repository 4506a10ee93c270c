"""Celery tasks: thin wrappers that pass ids, never objects (Celery's ``proj/tasks.py``).

Only the row id crosses the broker: file names can carry patient names, and Flower shows
task arguments to every operator.
"""

from __future__ import annotations

from collections.abc import Sequence

from celery import Task
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import DBAPIError, OperationalError

from ingest.watcher import Origin
from worker import pipeline, results
from worker.celery_app import (
    BACKFILL_QUEUE,
    LIVE_QUEUE,
    PUBLISH_TASK,
    RESULTS_QUEUE,
    TRIAGE_TASK,
    app,
)
from worker.resources import ModelUnavailableError

#: Infrastructure that comes back: retried with exponential backoff. Bad input never is.
TRANSIENT_ERRORS = (OperationalError, DBAPIError, BrokerError, ModelUnavailableError, OSError)


@app.task(
    name=TRIAGE_TASK,
    bind=True,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=2,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=30,
)
def triage(self: Task, entry_id: int) -> None:
    pipeline.triage(entry_id, token=str(self.request.id))


def enqueue(entry_id: int, origin: Origin) -> None:
    """Send the task for a committed row: live arrivals ahead of a backfill."""
    queue = BACKFILL_QUEUE if origin is Origin.BACKFILL else LIVE_QUEUE
    triage.apply_async(
        args=(entry_id,),
        queue=queue,
        retry=True,
        retry_policy={"max_retries": 5, "interval_start": 0.5, "interval_step": 1.0},
    )


@app.task(
    name=PUBLISH_TASK,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=2,
    retry_backoff_max=120,
    retry_jitter=True,
    max_retries=10,
)
def publish(entry_id: int) -> None:
    results.publish_row(entry_id)


def enqueue_publish(entry_ids: Sequence[int]) -> None:
    """Send the results task for rows just stored ``done``, behind all triage work."""
    for entry_id in entry_ids:
        publish.apply_async(
            args=(entry_id,),
            queue=RESULTS_QUEUE,
            retry=True,
            retry_policy={"max_retries": 5, "interval_start": 0.5, "interval_step": 1.0},
        )
