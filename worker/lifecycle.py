"""A worker node's life, from start to stop: every Celery signal handler, in one place.

:mod:`worker.celery_app` only configures the app; this module says what a worker does around
its tasks. The app's ``imports`` setting names it, so Celery imports it (and connects these
handlers) whenever a worker starts, however it was started: ``cxr-triage worker``, the worker
of ``cxr-triage run``, ``celery -A worker.celery_app worker`` with any pool. Nothing else needs
to import it, and no process that only sends tasks (the watcher, the CLI) carries it.

In the order a worker lives them (main: the node's main process; child: a prefork child):

- ``after_setup_logger`` (main): the PHI guard on every record; Celery's ``ready.`` line says
  "connected" until the model is warm (:func:`worker.readiness.connected_not_ready`);
- ``worker_init`` (main): ``/metrics`` served, the sum over the children (:mod:`worker.prometheus`);
- ``worker_process_init`` (child): connections inherited from the parent dropped, the model
  loaded and warmed after the fork, the process marked warm (:mod:`worker.readiness`);
- ``worker_ready`` (main): the node registered with its process count and its ready line
  watched for (solo and thread pools warm the model here); the lease keeper started
  (:mod:`worker.lease_keeper`), after the pool, so no child is forked from its thread;
- ``worker_shutting_down`` (main): the readiness watch stops (a warm shutdown retiring its
  processes is no process lost);
- ``worker_process_shutdown`` (child): its drift counts flushed, its metrics and readiness
  marker dropped;
- ``worker_shutdown`` (main): the node's markers dropped (solo: its drift counts flushed too).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from celery import signals
from kombu.exceptions import LimitExceeded
from kombu.exceptions import OperationalError as BrokerError

from ingest.watcher import Origin
from worker import lease_keeper
from worker.celery_app import app
from worker.settings import Settings, get_settings
from worker.tasks import TRIAGE_QUEUES, enqueue, queues_waiting

log = logging.getLogger(__name__)

#: Set when the node starts its warm shutdown: the readiness watch then stops logging.
_readiness_stop = threading.Event()


@signals.after_setup_logger.connect
def _cap_phi_loggers(**_: Any) -> None:
    """Celery configured logging at --loglevel: keep PHI-prone libraries quiet anyway, and
    redact every record (the prefork children inherit the guard)."""
    from worker import readiness
    from worker.phi_logging import install_phi_guard

    install_phi_guard()
    logging.getLogger("celery.apps.worker").addFilter(readiness.connected_not_ready)


@signals.worker_init.connect
def _serve_metrics(**_: Any) -> None:
    """The worker's main process serves ``/metrics``: the sum over its prefork children."""
    from worker import prometheus
    from worker.resources import get_session_factory

    settings = get_settings()
    port = settings.metrics_port
    if port is None:
        return
    prometheus.reset_multiprocess_dir()
    waiting = prometheus.RowsWaiting(lambda: prometheus.waiting_row_counts(get_session_factory()))
    try:
        prometheus.serve(
            port,
            settings.metrics_address,
            result_counts=lambda: prometheus.result_state_counts(get_session_factory()),
            collectors=[waiting, *_drift_collectors()],
            result_kind_counts=lambda: prometheus.result_kind_state_counts(get_session_factory()),
        )
    except OSError as error:  # a second worker on this host: its children still count
        log.warning("metrics port %d unavailable (%s); not serving /metrics", port, error)


def _drift_collectors() -> list[Any]:
    """The drift watch's gauges; none (and a warning) if the reference cannot be read."""
    from model.drift import Reference
    from worker.drift_watch import DriftCollector
    from worker.resources import get_session_factory

    try:
        reference = Reference.load(get_settings().model_path)
    except (OSError, ValueError, KeyError) as error:
        log.warning("no drift metrics: %s", error)
        return []
    return [DriftCollector(get_session_factory(), reference)]


@signals.worker_process_init.connect
def _prepare_child(**_: Any) -> None:
    """A prefork child starts: drop connections inherited from the parent, then load the
    model here, after the fork (TensorFlow is not fork-safe)."""
    from worker import resources

    resources.after_fork()
    seconds = _warm_up()
    if seconds is not None:
        from worker import readiness

        readiness.mark_process_warm(get_settings().data_dir, seconds)


@signals.worker_ready.connect
def _prepare_solo(sender: Any = None, **_: Any) -> None:
    """Register how many warm processes make this worker ready, and watch for them (the ready
    line). Solo and thread pools never fork: load the model in this process now."""
    from worker import readiness

    if getattr(sender, "app", None) is not app:  # another Celery app in this process (tests)
        return
    data_dir = get_settings().data_dir
    node = str(getattr(sender, "hostname", "worker"))
    pool_module = type(getattr(sender, "pool", None)).__module__
    solo = pool_module.endswith((".solo", ".thread"))
    controller = getattr(sender, "controller", None)
    processes = 1 if solo else int(getattr(controller, "concurrency", None) or 1)
    readiness.register_worker(data_dir, node, processes)
    readiness.watch_and_log(data_dir, node, _readiness_stop)
    if solo:
        seconds = _warm_up()
        if seconds is not None:
            readiness.mark_process_solo(data_dir, seconds)


@signals.worker_ready.connect
def _keep_leases(**_: Any) -> None:
    """The node's main process renews its tasks' claims and takes over dead nodes' claims
    (:mod:`worker.lease_keeper`); started after the pool, so no child is forked from its
    thread."""
    start_lease_keeper(get_settings())


def start_lease_keeper(settings: Settings) -> threading.Event:
    """This node's lease keeper (:mod:`worker.lease_keeper`), wired to Celery's record of the
    tasks it runs and to the broker; returns its stop."""

    def send(entry_ids: Sequence[int]) -> None:
        size = max(1, settings.batch_size)  # one task per batch, as the watcher sends them
        for start in range(0, len(entry_ids), size):  # rows that waited: ahead of a backfill
            enqueue(list(entry_ids[start : start + size]), Origin.LIVE)

    return lease_keeper.start_keeper(
        settings, _running_task_ids, send, outage=(BrokerError,), triage_queued=_triage_queued
    )


def _triage_queued() -> bool | None:
    """Whether a triage message waits on the broker; None when the broker cannot tell."""
    try:
        with app.pool.acquire(block=True, timeout=1.0) as connection:
            return queues_waiting(connection, TRIAGE_QUEUES)
    except (BrokerError, LimitExceeded, OSError):  # unknown: the check waits for a clear answer
        return None


def _running_task_ids() -> set[str]:
    """Ids of the tasks this worker node is executing now (the main process's record)."""
    from celery.worker import state  # the worker's, imported only where a worker runs

    try:
        return {request.id for request in tuple(state.active_requests)}
    except RuntimeError:  # the set changed while copied: the next tick renews
        return set()


@signals.worker_shutting_down.connect
def _stop_watching_readiness(**_: Any) -> None:
    """A warm shutdown retires the pool processes one by one: that is not a process lost
    and restarting, so the readiness watch stops before they go (it logged ``not ready ...
    (one is restarting)`` at every normal stop)."""
    _readiness_stop.set()


@signals.worker_process_shutdown.connect
def _forget_child(pid: int | None = None, **_: Any) -> None:
    from worker import prometheus, readiness, resources

    resources.flush_drift_counts()  # a clean exit keeps its last seconds of drift counts
    prometheus.mark_process_dead(pid or os.getpid())
    readiness.forget_process(get_settings().data_dir, pid)


@signals.worker_shutdown.connect
def _not_ready(sender: Any = None, **_: Any) -> None:
    from worker import readiness, resources

    if getattr(sender, "app", None) is not app:
        return
    _readiness_stop.set()
    resources.flush_drift_counts()  # solo/threads: the tasks ran in this process
    data_dir = get_settings().data_dir
    readiness.forget_worker(data_dir)
    readiness.forget_process(data_dir)  # solo: the main process was the scoring one


def _warm_up() -> float | None:
    """Everything the first task would otherwise pay for: the model with its traced graphs,
    and the database driver with one pooled connection. Returns the seconds the model took,
    or None when it could not be loaded (the process then never reports ready)."""
    from sqlalchemy.exc import SQLAlchemyError

    from worker import resources

    settings = get_settings()
    threads = settings.model_threads or max(1, (os.cpu_count() or 1) // settings.worker_concurrency)
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(threads))
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    started = time.monotonic()
    seconds: float | None = None
    try:
        resources.get_scorer().warm_up(settings.batch_size)
        seconds = time.monotonic() - started
        log.info("model loaded and warm in process %d (%.1f s)", os.getpid(), seconds)
    except Exception:  # the task retries; the worker must come up to report it in Flower
        log.exception("model could not be loaded or traced at worker start")
    try:
        with resources.get_engine().connect():
            pass
    except SQLAlchemyError as error:  # tasks retry until the database is back
        log.warning("database not reachable at worker start: %s", type(error).__name__)
    return seconds
