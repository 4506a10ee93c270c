"""The embedded broker takes tasks in queue order: live, then backfill, then results.

Real kombu connections on a real filesystem broker folder: results and backfill messages
are published before the live ones, and a consumer of the three queues (in the worker's
``--queues`` order) must receive every live message first and every results message last.
The plain filesystem transport, consumed the same way, interleaves them: the check can fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue

from worker.celery_app import BACKFILL_QUEUE, LIVE_QUEUE, QUEUES, RESULTS_QUEUE
from worker.transport import TRANSPORT


def _delivery_order(folder: Path, transport: str) -> list[str]:
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder)}
    exchange = Exchange("cxr", type="direct")
    queues = [Queue(name, exchange, routing_key=name) for name in QUEUES]
    with Connection("filesystem://", transport=transport, transport_options=options) as conn:
        channel = conn.channel()
        for queue in queues:
            queue(channel).declare()
        producer = Producer(channel, exchange=exchange)
        for name in (RESULTS_QUEUE, RESULTS_QUEUE, BACKFILL_QUEUE, BACKFILL_QUEUE):
            producer.publish({"queue": name}, routing_key=name)
        for _ in range(2):
            producer.publish({"queue": LIVE_QUEUE}, routing_key=LIVE_QUEUE)
        received: list[str] = []

        def on_message(body: dict[str, str], message: object) -> None:
            received.append(body["queue"])
            message.ack()  # type: ignore[attr-defined]

        with Consumer(conn.channel(), queues=queues, callbacks=[on_message], prefetch_count=1):
            while len(received) < 6:
                conn.drain_events(timeout=5)
    return received


def test_embedded_broker_delivers_live_then_backfill_then_results(tmp_path: Path) -> None:
    assert _delivery_order(tmp_path, TRANSPORT) == [
        LIVE_QUEUE,
        LIVE_QUEUE,
        BACKFILL_QUEUE,
        BACKFILL_QUEUE,
        RESULTS_QUEUE,
        RESULTS_QUEUE,
    ]


def test_plain_filesystem_transport_interleaves_the_queues(tmp_path: Path) -> None:
    """Why worker.transport exists: round robin takes a results task before all live ones."""
    order = _delivery_order(tmp_path, "filesystem")
    last_live = len(order) - 1 - order[::-1].index(LIVE_QUEUE)
    assert order.index(RESULTS_QUEUE) < last_live, order


@pytest.mark.parametrize("broker", ["filesystem://", "redis://127.0.0.1:6379/8"])
def test_celery_config_orders_the_queues_on_every_broker(broker: str, tmp_path: Path) -> None:
    from worker.celery_app import celery_config
    from worker.settings import Settings

    settings = Settings(broker_url=broker, data_dir=tmp_path)
    config = celery_config(settings)
    if broker.startswith("redis"):
        assert config["broker_transport_options"]["queue_order_strategy"] == "priority"
    else:
        assert config["broker_transport"] == TRANSPORT
