"""Celery tasks: thin wrappers that pass ids, never objects (Celery's ``proj/tasks.py``).

The composition root of the Celery side: with :mod:`worker.celery_app`, the only module that
knows Celery. :mod:`worker.pipeline`, :mod:`worker.intake` and :mod:`worker.results` are plain
Python that take their collaborators as arguments; they are wired to this process's
resources (:mod:`worker.resources`) and to the broker here.

Only row ids cross the broker: file names can carry patient names, and Flower shows task
arguments to every operator. A triage task carries the ids of one admitted batch (up to
``CXR_BATCH_SIZE`` rows, scored by one model call), so Flower shows which rows it holds.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.utils.time import get_exponential_backoff_interval
from kombu.exceptions import ChannelError
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import DBAPIError, OperationalError

from ingest.watcher import Origin
from worker import leases, results
from worker.celery_app import (
    BACKFILL_QUEUE,
    LIVE_QUEUE,
    PUBLISH_TASK,
    RESULTS_QUEUE,
    TRIAGE_TASK,
    app,
)
from worker.intake import Intake
from worker.pipeline import Pipeline
from worker.resources import (
    ModelUnavailableError,
    get_decode_min_side,
    get_drift_watch,
    get_scorer,
    get_session_factory,
)
from worker.settings import Settings, get_settings

#: The queues whose messages a results task gives its worker process back to.
TRIAGE_QUEUES = (LIVE_QUEUE, BACKFILL_QUEUE)

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
def triage(self: Task, entry_ids: list[int] | int) -> None:
    ids = [entry_ids] if isinstance(entry_ids, int) else entry_ids  # one-row messages of 0.1
    # A retry after a transient error is not another attempt at the rows (the poison cap
    # counts deliveries whose worker died); a redelivery has ``retries`` 0 and counts.
    triage_pipeline().triage(ids, token=str(self.request.id), retry=bool(self.request.retries))


def triage_pipeline() -> Pipeline:
    """The pipeline wired to this process's engine, model and drift watch, and to the broker."""
    return Pipeline(
        get_settings(),
        get_session_factory(),
        get_scorer,
        on_scored=enqueue_publish,
        reraise=(SoftTimeLimitExceeded,),  # reaches Celery: its rows are not stored as failed
        after_batch=get_drift_watch().check,
        decode_min_side=get_decode_min_side(),
        send_alone=_send_alone,
    )


def build_intake(settings: Settings) -> Intake:
    """The watcher's callback, wired to the database and the broker."""
    return Intake(settings, get_session_factory(), enqueue, outage=(BrokerError,))


def start_lease_keeper(settings: Settings) -> threading.Event:
    """This node's lease keeper (:mod:`worker.leases`), wired to Celery's record of the
    tasks it runs and to the broker."""

    def send(entry_ids: Sequence[int]) -> None:
        size = max(1, settings.batch_size)  # one task per batch, as the watcher sends them
        for start in range(0, len(entry_ids), size):  # rows that waited: ahead of a backfill
            enqueue(list(entry_ids[start : start + size]), Origin.LIVE)

    return leases.start_keeper(settings, _running_task_ids, send, outage=(BrokerError,))


def _running_task_ids() -> set[str]:
    """Ids of the tasks this worker node is executing now (the main process's record)."""
    from celery.worker import state  # the worker's, imported only where a worker runs

    try:
        return {request.id for request in tuple(state.active_requests)}
    except RuntimeError:  # the set changed while copied: the next tick renews
        return set()


def _send_alone(entry_ids: Sequence[int]) -> None:
    for entry_id in entry_ids:
        enqueue([entry_id], Origin.LIVE)


def enqueue(entry_ids: list[int], origin: Origin) -> None:
    """Send one task for a batch of committed rows: live arrivals ahead of a backfill."""
    queue = BACKFILL_QUEUE if origin is Origin.BACKFILL else LIVE_QUEUE
    triage.apply_async(
        args=(list(entry_ids),),
        queue=queue,
        retry=True,
        retry_policy={"max_retries": 5, "interval_start": 0.5, "interval_step": 1.0},
    )


@app.task(
    name=PUBLISH_TASK,
    bind=True,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=2,
    retry_backoff_max=120,
    retry_jitter=True,
    max_retries=10,
)
def publish(self: Task, entry_ids: list[int] | int) -> None:
    ids = [entry_ids] if isinstance(entry_ids, int) else entry_ids  # one-row messages of 0.1
    sessions = get_session_factory()
    remaining = results.publish_rows(get_settings(), sessions, get_scorer(), ids, triage_waiting)
    if remaining.deferred:  # a new task, not a retry: yielding is no failure to count
        enqueue_publish(remaining.deferred)
    pending = remaining.pending
    if not pending:
        return
    if self.request.retries >= self.max_retries:  # derived data: give up loudly, by row id
        results.give_up(sessions, pending, "the archived original never appeared")
        return
    countdown = get_exponential_backoff_interval(  # the same backoff as the autoretries
        int(self.retry_backoff), self.request.retries, self.retry_backoff_max, self.retry_jitter
    )
    raise self.retry(  # only the rows still waiting for their archive move, with backoff
        args=(pending,),
        countdown=countdown,
        exc=FileNotFoundError(f"archived original of {len(pending)} row(s) not there yet"),
    )


def triage_waiting() -> bool:
    """Whether a triage message waits on the broker: a results task then gives its worker
    process back after the row in hand. False when the broker cannot tell (it goes on)."""
    try:
        with app.pool.acquire(block=True, timeout=1.0) as connection:
            return queues_waiting(connection.default_channel, TRIAGE_QUEUES)
    except Exception:  # the check is an optimisation: never fail a results task over it  # noqa: BLE001
        return False


def queues_waiting(channel: Any, queues: Sequence[str]) -> bool:
    """Does any of ``queues`` hold a message? Kombu's passive declare reports the count on
    every transport (Redis, the embedded filesystem broker); a queue never declared holds none.
    """
    for name in queues:
        try:
            if channel.queue_declare(queue=name, passive=True).message_count:
                return True
        except ChannelError:  # not declared yet: nothing was ever sent to it
            continue
    return False


def enqueue_publish(entry_ids: Sequence[int]) -> None:
    """Send one results task for the rows a triage batch just stored ``done`` (or that a
    results task handed back to let triage work run); it runs behind all triage work.

    No countdown: a message with an ETA is taken off the queue at once and held by the
    worker, which then runs it when due ahead of any triage message still queued."""
    if not entry_ids:
        return
    publish.apply_async(
        args=(list(entry_ids),),
        queue=RESULTS_QUEUE,
        retry=True,
        retry_policy={"max_retries": 5, "interval_start": 0.5, "interval_step": 1.0},
    )
