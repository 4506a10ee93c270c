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


@pytest.mark.parametrize(
    "broker", ["filesystem://", "redis://127.0.0.1:6379/8", "amqp://guest@127.0.0.1:5672//"]
)
def test_celery_config_orders_the_queues_on_every_broker(broker: str, tmp_path: Path) -> None:
    from worker.celery_app import QUEUES, celery_config
    from worker.settings import Settings

    settings = Settings(broker_url=broker, data_dir=tmp_path)
    config = celery_config(settings)
    assert [q.name for q in config["task_queues"]] == list(QUEUES)
    if broker.startswith("redis"):
        assert config["broker_transport_options"]["queue_order_strategy"] == "priority"
    elif broker.startswith("amqp"):
        # durable quorum queues, confirmed publishes, a topic exchange (delayed retries)
        assert {q.queue_arguments["x-queue-type"] for q in config["task_queues"]} == {"quorum"}
        assert all(q.durable and q.exchange.type == "topic" for q in config["task_queues"])
        assert config["broker_transport_options"] == {"confirm_publish": True}
        assert config["worker_detect_quorum_queues"] and config["broker_transport"] is None
    else:
        assert config["broker_transport"] == TRANSPORT


def test_the_embedded_broker_makes_its_folders_when_it_connects(tmp_path: Path) -> None:
    """The configuration no longer makes them at import: the first process to connect
    (the watcher sending, or the worker consuming) does, and a send then succeeds."""
    from celery import Celery

    from worker.celery_app import celery_config
    from worker.settings import Settings

    settings = Settings(broker_url="filesystem://", data_dir=tmp_path / "data")
    config = celery_config(settings)
    assert not settings.broker_folder.exists()
    app = Celery("folders", set_as_current=False)
    app.config_from_object(config)
    with app.connection_for_write() as connection:
        connection.default_channel  # noqa: B018  opening the channel is the start-up
        assert {p.name for p in settings.broker_folder.iterdir()} == {
            "queue",
            "control",
            "processed",
        }
        app.send_task("cxr.triage", args=([1],), queue=LIVE_QUEUE, connection=connection)
    assert len(list((settings.broker_folder / "queue").iterdir())) == 1
