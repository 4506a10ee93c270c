"""Celery tasks: thin wrappers that pass ids, never objects (Celery's ``proj/tasks.py``).

The composition root of the Celery side. With :mod:`worker.celery_app` (the configured app)
and :mod:`worker.lifecycle` (what a worker does as it starts and stops, the lease keeper's
wiring among it), the only code that knows Celery. :mod:`worker.pipeline`,
:mod:`worker.intake` and :mod:`worker.publishing` are plain Python that take their
collaborators as arguments; they are wired to this process's resources
(:mod:`worker.resources`) and to the broker here.

Only row ids cross the broker: file names can carry patient names, and Flower shows task
arguments to every operator. A triage task carries the ids of one admitted batch (up to
``CXR_BATCH_SIZE`` rows, scored by one model call), so Flower shows which rows it holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.utils.time import get_exponential_backoff_interval
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import DBAPIError, OperationalError

from ingest.watcher import Origin
from worker import broker, publishing
from worker.celery_app import (
    BACKFILL_QUEUE,
    LIVE_QUEUE,
    PUBLISH_TASK,
    RESULTS_QUEUE,
    TRIAGE_TASK,
    app,
)
from worker.intake import Intake
from worker.pipeline import Pipeline, row_ids
from worker.resources import (
    ModelUnavailableError,
    get_decode_min_side,
    get_drift_buffer,
    get_drift_watch,
    get_scorer,
    get_session_factory,
)
from worker.settings import Settings, get_settings

#: The queues whose messages a results task gives its worker process back to.
TRIAGE_QUEUES = (LIVE_QUEUE, BACKFILL_QUEUE)
#: RabbitMQ: how long results handed back to triage work wait in the broker (its native
#: delayed delivery) before they are delivered again. Elsewhere they are sent back at once.
RESULTS_DEFER_S = 5

#: Infrastructure that comes back: retried with exponential backoff. Bad input never is.
TRANSIENT_ERRORS = (OperationalError, DBAPIError, BrokerError, ModelUnavailableError, OSError)


class RetriedTask(Task):
    """Both tasks' retry rule, written once: a transient error (:data:`TRANSIENT_ERRORS`)
    is retried with exponential backoff from 2 s and full jitter; bad input never is. Each
    task states only how long it may wait and how often it tries (Celery reads these
    attributes off the task class as it would the decorator's options)."""

    autoretry_for = TRANSIENT_ERRORS
    retry_backoff = 2
    retry_jitter = True


class TriageTask(RetriedTask):
    """A triage task holds its rows for its retry (:meth:`Pipeline.hold`): they wait, leased
    until the retry is due, and its claim then counts no attempt. Without it a retry that
    waited longer than a lease lost its rows to a lease keeper, which counted one attempt
    each time: a share outage of a few minutes failed innocent films as poison files."""

    def retry(
        self,
        args: Any = None,
        kwargs: Any = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: datetime | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Any:
        request = self.request
        limit = self.max_retries if max_retries is None else max_retries
        if not request.called_directly and (limit is None or request.retries < limit):
            if countdown is not None:
                delay = float(countdown)
            elif eta is not None:
                delay = max(0.0, (eta - datetime.now(eta.tzinfo)).total_seconds())
            else:
                delay = float(self.default_retry_delay)
            triage_pipeline().hold(str(request.id), delay)
        # else Celery raises the error: no retry follows, the rows wait for a lease keeper
        return super().retry(args, kwargs, exc, throw, eta, countdown, max_retries, **options)


#: How a send waits out a broker blip before it raises (both tasks' messages).
SEND_RETRY_POLICY = {"max_retries": 5, "interval_start": 0.5, "interval_step": 1.0}


@app.task(name=TRIAGE_TASK, base=TriageTask, bind=True, retry_backoff_max=300, max_retries=30)
def triage(self: Task, entry_ids: list[int] | int) -> None:
    ids = row_ids(entry_ids)
    # A retry takes back the rows it held (not another attempt: the database says so, see
    # db.worklist.claim) and no new batch-mates.
    triage_pipeline().triage(ids, token=str(self.request.id), retry=bool(self.request.retries))


def triage_pipeline() -> Pipeline:
    """The pipeline wired to this process's engine, model and drift watch, and to the broker."""
    return Pipeline(
        get_settings(),
        get_session_factory(),
        get_scorer,
        on_scored=enqueue_publish,
        on_unscored=_enqueue_not_analysed,
        reraise=(SoftTimeLimitExceeded,),  # reaches Celery: its rows are not stored as failed
        after_batch=get_drift_watch().check,
        decode_min_side=get_decode_min_side(),
        send_alone=_send_alone,
        count_drift=get_drift_buffer().add,
    )


def _enqueue_not_analysed(entry_ids: Sequence[int]) -> None:
    """Unscored rows to the results task, for their "not analysed" SR (when enabled)."""
    if get_settings().results_not_analysed:
        enqueue_publish(entry_ids)


def build_intake(settings: Settings) -> Intake:
    """The watcher's callback, wired to the database and the broker."""
    return Intake(settings, get_session_factory(), enqueue, outage=(BrokerError,))


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
        retry_policy=SEND_RETRY_POLICY,
    )


@app.task(name=PUBLISH_TASK, base=RetriedTask, bind=True, retry_backoff_max=120, max_retries=10)
def publish(self: Task, entry_ids: list[int] | int) -> None:
    ids = row_ids(entry_ids)
    sessions = get_session_factory()
    pushed = broker.broker_kind(get_settings().broker_url) is broker.BrokerKind.AMQP
    remaining = publishing.publish_rows(
        get_settings(),
        sessions,
        get_scorer(),
        ids,
        triage_waiting,
        progress_rows=0 if pushed else 1,
    )
    if remaining.deferred:  # a new task, not a retry: yielding is no failure to count
        enqueue_publish(remaining.deferred, countdown=RESULTS_DEFER_S if pushed else None)
    pending = remaining.pending
    if not pending:
        return
    if self.request.retries >= self.max_retries:  # derived data: give up loudly, by row id
        publishing.give_up(sessions, pending, "the archived original never appeared")
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
            return queues_waiting(connection, TRIAGE_QUEUES)
    except Exception:  # the check is an optimisation: never fail a results task over it  # noqa: BLE001
        return False


def queues_waiting(connection: Any, queues: Sequence[str]) -> bool:
    """Does any of ``queues`` hold a message ready for a worker? Asked of every broker the
    same way (:func:`worker.broker.any_waiting`: a passive declare's message count, on a
    channel of its own on AMQP); a queue never declared holds none."""
    return broker.any_waiting(connection, queues)


def enqueue_publish(entry_ids: Sequence[int], countdown: float | None = None) -> None:
    """Send one results task for the rows a triage batch just stored ``done`` (or that a
    results task handed back to let triage work run); it runs behind all triage work.

    No countdown on Redis and the embedded broker: a message with an ETA is taken off the
    queue at once and held by the worker, which then runs it when due ahead of any triage
    message still queued. RabbitMQ holds a delayed message itself (native delayed delivery
    on the topic exchange), so there handed-back results wait ``countdown`` seconds."""
    if not entry_ids:
        return
    publish.apply_async(
        args=(list(entry_ids),),
        countdown=countdown,
        queue=RESULTS_QUEUE,
        retry=True,
        retry_policy=SEND_RETRY_POLICY,
    )
