"""The one Celery app, configured from the settings object (Celery's ``proj/celery.py``).

Queues. Priority is only known after scoring, and the worklist's reading order does that
prioritising; what the queues must prevent is a live arrival waiting behind a backlog. So
there are two: ``cxr.live`` for files that arrive while the watcher runs and
``cxr.backfill`` for what the start-up rescan finds (a weekend's export, a restored share).
Workers consume both, live first: on Redis the queues are polled in that fixed order
(``queue_order_strategy='priority'``), and the embedded filesystem broker the same way
(:mod:`worker.transport`), so a live task is always taken before any backfill task and
results tasks only run when no triage task waits. A deployment that wants a hard reservation runs
one more worker with ``--queues cxr.live``.

Reliability: acks late with reject-on-worker-lost and a prefetch of one, so a task whose
worker dies is redelivered, and the database claim makes the redelivery harmless. Redis
redelivers an unacknowledged task after ``visibility_timeout``; it is set deliberately
longer than the hard task time limit. No result backend: the worklist is the record.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from celery import Celery, signals
from kombu import Queue

from worker.settings import Settings, get_settings

LIVE_QUEUE = "cxr.live"
BACKFILL_QUEUE = "cxr.backfill"
RESULTS_QUEUE = "cxr.results"
QUEUES = (LIVE_QUEUE, BACKFILL_QUEUE, RESULTS_QUEUE)  # consumption order
TRIAGE_TASK = "cxr.triage"
PUBLISH_TASK = "cxr.publish"
PROCESS_START_TIMEOUT_S = 180.0

log = logging.getLogger(__name__)


def celery_config(settings: Settings) -> dict[str, Any]:
    transport_options: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout_s}
    if settings.broker.startswith(("redis://", "rediss://")):
        transport_options["queue_order_strategy"] = "priority"  # poll queues in -Q order
    elif settings.broker.startswith("filesystem://"):
        folder = settings.broker_folder
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        transport_options.update(
            data_folder_in=str(folder / "queue"),
            data_folder_out=str(folder / "queue"),
            control_folder=str(folder / "control"),
            processed_folder=str(folder / "processed"),
            store_processed=False,
            polling_interval=0.1,
        )
    extra: dict[str, Any] = {}
    if settings.broker.startswith("filesystem://"):
        from worker.transport import TRANSPORT

        extra["broker_transport"] = TRANSPORT  # queues in -Q order, as on Redis
    return {
        **extra,
        "broker_url": settings.broker,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_time_limit": settings.task_time_limit_s,
        "task_soft_time_limit": max(settings.task_time_limit_s - 30, 1),
        "task_ignore_result": True,
        "result_backend": None,
        "task_queues": tuple(Queue(name) for name in QUEUES),
        "task_default_queue": LIVE_QUEUE,
        "task_serializer": "json",
        "accept_content": ["json"],
        "worker_max_memory_per_child": settings.worker_max_memory_per_child_kb,
        # A pool process reports "up" only after worker_process_init has loaded TensorFlow and
        # the model; Celery's 4 s default kills slower starts, and a replacement for a killed or
        # recycled process then never comes up (a restart loop on a busy machine).
        "worker_proc_alive_timeout": PROCESS_START_TIMEOUT_S,
        "worker_send_task_events": True,  # for Flower
        "task_send_sent_event": True,
        "enable_utc": True,
        "timezone": "UTC",
    }


app = Celery("cxr_triage", include=["worker.tasks"])
app.config_from_object(celery_config(get_settings()))


@signals.after_setup_logger.connect
def _cap_phi_loggers(**_: Any) -> None:
    """Celery configured logging at --loglevel: keep PHI-prone libraries quiet anyway, and
    redact every record (the prefork children inherit the guard)."""
    from worker.phi_logging import install_phi_guard

    install_phi_guard()
    logging.getLogger("celery.apps.worker").addFilter(_not_ready_yet)


def _not_ready_yet(record: logging.LogRecord) -> bool:
    """Celery's ``<node> ready.`` means connected; the model is not loaded yet. Say so: the
    ready line is :mod:`worker.readiness`'s, logged once every process is warm."""
    message = record.msg  # the PHI guard may have merged the node name in already
    if isinstance(message, str) and message.endswith(" ready."):
        record.msg = message.removesuffix(" ready.") + (
            " connected to the broker; not ready until the model is warm"
        )
    return True


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


@signals.worker_init.connect
def _serve_metrics(**_: Any) -> None:
    """The worker's main process serves ``/metrics``: the sum over its prefork children."""
    from worker import metrics
    from worker.resources import get_session_factory

    settings = get_settings()
    port = settings.metrics_port
    if port is None:
        return
    metrics.reset_multiprocess_dir()
    try:
        metrics.serve(
            port,
            settings.metrics_address,
            result_counts=lambda: metrics.result_state_counts(get_session_factory()),
            collectors=_drift_collectors(),
        )
    except OSError as error:  # a second worker on this host: its children still count
        log.warning("metrics port %d unavailable (%s); not serving /metrics", port, error)


def _drift_collectors() -> list[Any]:
    """The drift watch's gauges; none (and a warning) if the reference cannot be read."""
    from model.drift import Reference
    from worker.drift import DriftCollector
    from worker.resources import get_session_factory

    try:
        reference = Reference.load(get_settings().model_path)
    except (OSError, ValueError, KeyError) as error:
        log.warning("no drift metrics: %s", error)
        return []
    return [DriftCollector(get_session_factory(), reference)]


@signals.worker_process_shutdown.connect
def _forget_child(pid: int | None = None, **_: Any) -> None:
    from worker import metrics, readiness

    metrics.mark_process_dead(pid or os.getpid())
    readiness.forget_process(get_settings().data_dir, pid)


_readiness_stop = threading.Event()


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
    (:mod:`worker.leases`); started after the pool, so no child is forked from its thread."""
    from worker.tasks import start_lease_keeper

    start_lease_keeper(get_settings())


@signals.worker_shutdown.connect
def _not_ready(sender: Any = None, **_: Any) -> None:
    from worker import readiness

    if getattr(sender, "app", None) is not app:
        return
    _readiness_stop.set()
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
