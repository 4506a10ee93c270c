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

RabbitMQ pushes messages instead of being polled, so there the order comes from its
consumer prefetch: every queue is a quorum queue, and quorum queues only know a prefetch
per consumer, so each queue's consumer holds at most ``concurrency`` unacknowledged
messages of its own. A backfill backlog therefore never fills the worker's slots: a live
arrival is delivered at once and runs when the next process frees, ahead of the backfill
message delivered after it (measured: ``bench/bench_queue_order.py``; README "Scaling
out"). Quorum queues have no per-message priority on RabbitMQ 3.x, and none is needed.
The results task's yield (:func:`worker.tasks.triage_waiting`) asks the queues' depth on
every broker (:mod:`worker.broker`).

Reliability: acks late with reject-on-worker-lost and a prefetch of one, so a task whose
worker dies is redelivered, and the database claim makes the redelivery harmless. Redis
redelivers an unacknowledged task after ``visibility_timeout``; it is set deliberately
longer than the hard task time limit. RabbitMQ redelivers when the consumer's connection
drops; its ``consumer_timeout`` (30 min by default) must exceed the hard task time limit.
Publishes to RabbitMQ are confirmed, and retries with a countdown use RabbitMQ's native
delayed delivery (topic exchange), so no worker holds a delayed message in memory.
No result backend: the worklist is the record.

Configuration only, pure: building it touches no file or socket, so importing the app (as the
watcher and the CLI do, to send tasks) has no effect. The tasks are :mod:`worker.tasks`; what
a worker does as it starts and stops (its Celery signal handlers) is :mod:`worker.lifecycle`,
which the ``imports`` setting has every worker load. Neither is imported here.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from worker.broker import BrokerKind, broker_kind
from worker.settings import Settings, get_settings

LIVE_QUEUE = "cxr.live"
BACKFILL_QUEUE = "cxr.backfill"
RESULTS_QUEUE = "cxr.results"
QUEUES = (LIVE_QUEUE, BACKFILL_QUEUE, RESULTS_QUEUE)  # consumption order
TRIAGE_TASK = "cxr.triage"
PUBLISH_TASK = "cxr.publish"
PROCESS_START_TIMEOUT_S = 180.0
#: The AMQP exchange of the three queues: a topic exchange, which RabbitMQ's native delayed
#: delivery (Celery's retries with a countdown on quorum queues) needs.
AMQP_EXCHANGE = "cxr"
QUORUM = {"x-queue-type": "quorum"}
#: Named, never imported, here: the worker's signal handlers import this module (the app).
LIFECYCLE_MODULE = "worker.lifecycle"


def task_queues(kind: BrokerKind) -> tuple[Queue, ...]:
    """The three queues; on RabbitMQ durable quorum queues bound to one topic exchange."""
    if kind is BrokerKind.AMQP:
        exchange = Exchange(AMQP_EXCHANGE, type="topic", durable=True)
        return tuple(
            Queue(name, exchange, routing_key=name, durable=True, queue_arguments=QUORUM)
            for name in QUEUES
        )
    return tuple(Queue(name) for name in QUEUES)


def celery_config(settings: Settings) -> dict[str, Any]:
    """The app's whole configuration, from the settings (no folder is made here: the
    embedded broker makes its own when it connects, :mod:`worker.transport`)."""
    kind = broker_kind(settings.broker_url)
    transport_options: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout_s}
    # Celery's defaults, stated: the same keys on every broker, so a configuration is whole
    amqp: dict[str, Any] = {
        "task_default_exchange": None,
        "task_default_exchange_type": "direct",
        "task_default_routing_key": None,
        "task_default_queue_type": "classic",
        "task_create_missing_queue_type": "classic",
        "task_create_missing_queue_exchange_type": None,
    }
    if kind is BrokerKind.REDIS:
        transport_options["queue_order_strategy"] = "priority"  # poll queues in -Q order
    elif kind is BrokerKind.AMQP:
        # A publish returns once the broker has the message (on disk, replicated): the
        # watcher only counts a task as sent when RabbitMQ says so.
        transport_options = {"confirm_publish": True}
        amqp = {
            "task_default_exchange": AMQP_EXCHANGE,
            "task_default_exchange_type": "topic",
            "task_default_routing_key": LIVE_QUEUE,
            "task_default_queue_type": "quorum",
            "task_create_missing_queue_type": "quorum",
            "task_create_missing_queue_exchange_type": "topic",
        }
    elif kind is BrokerKind.FILESYSTEM:  # its folders are made when it connects (worker.transport)
        folder = settings.broker_folder
        transport_options.update(
            data_folder_in=str(folder / "queue"),
            data_folder_out=str(folder / "queue"),
            control_folder=str(folder / "control"),
            processed_folder=str(folder / "processed"),
            store_processed=False,
            polling_interval=0.1,
        )
    extra: dict[str, Any] = {"broker_transport": None}  # from the URL's scheme
    if kind is BrokerKind.FILESYSTEM:
        from worker.transport import TRANSPORT

        extra["broker_transport"] = TRANSPORT  # queues in -Q order, as on Redis
    return {
        **extra,
        **amqp,
        # The worker's signal handlers: imported (and connected) whenever a worker starts,
        # never by a process that only sends tasks.
        "imports": (LIFECYCLE_MODULE,),
        "broker_url": settings.broker_url,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_detect_quorum_queues": True,  # quorum: per-consumer prefetch (module doc)
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_time_limit": settings.task_time_limit_s,
        "task_soft_time_limit": max(settings.task_time_limit_s - 30, 1),
        "task_ignore_result": True,
        "result_backend": None,
        "task_queues": task_queues(kind),
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
