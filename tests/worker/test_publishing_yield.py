"""Results yield to scoring: a results task gives its worker process back, after the row in
hand, as soon as a triage message waits on the broker; the rows it did not start are handed
back (the task sends them again), and every row is published exactly once in the end.

Real kombu connections on the real Redis, RabbitMQ (a virtual host of the test's own, the
worker's quorum queues) and the embedded filesystem broker, real files and databases; the
scorer is :class:`tests.fakes.FakeScorer` (no TensorFlow: its heatmap is flat).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from kombu import Connection, Exchange, Producer, Queue
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from db.worklist import Arrival, ScoreValues, admit
from ingest import read_image
from tests.fakes import FakeScorer
from tests.support.rabbitmq import rabbitmq_vhost
from tests.support.worklist import record_scored
from worker.broker import BrokerKind, broker_kind, queue_depths
from worker.celery_app import BACKFILL_QUEUE, LIVE_QUEUE, QUEUES, RESULTS_QUEUE, task_queues
from worker.publishing import Remaining, publish_rows
from worker.settings import Settings
from worker.tasks import TRIAGE_QUEUES, queues_waiting
from worker.transport import TRANSPORT

SCORED = ScoreValues(0.9, "pneumonia", "urgent", 0, 0.44, "fake-1.0")


@dataclass
class CountingScorer(FakeScorer):
    """The fake scorer, counting the images it computed a heatmap for."""

    heatmapped: list[int] = field(default_factory=list)

    def heatmaps(self, images: Sequence[np.ndarray]) -> np.ndarray:
        self.heatmapped.append(len(images))
        return super().heatmaps(images)


@pytest.fixture(
    params=[
        pytest.param("redis", marks=pytest.mark.services),
        pytest.param("rabbitmq", marks=pytest.mark.services),
        "filesystem",
    ]
)
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Connection]:
    """A connection to a real broker with no message in any of the worker's queues."""
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        connection = Connection(url)
    elif request.param == "rabbitmq":
        with rabbitmq_vhost() as url, Connection(url, transport_options=CONFIRMED) as amqp:
            yield amqp
        return
    else:
        folder = tmp_path / "broker"
        folder.mkdir()
        options = {"data_folder_in": str(folder), "data_folder_out": str(folder)}
        connection = Connection("filesystem://", transport=TRANSPORT, transport_options=options)
    with connection:
        yield connection


#: Publishes the broker has confirmed: the count a passive declare then gives includes them.
CONFIRMED = {"confirm_publish": True}


def _send(connection: Connection, queue: str) -> None:
    """One message on ``queue``, declared as the worker declares it (quorum on RabbitMQ)."""
    channel = connection.channel()
    if broker_kind(connection.as_uri()) is BrokerKind.AMQP:
        (declared,) = (q for q in task_queues(BrokerKind.AMQP) if q.name == queue)
    else:
        declared = Queue(queue, Exchange("cxr", type="direct"), routing_key=queue)
    declared(channel).declare()
    Producer(channel, exchange=declared.exchange).publish({"ids": [1]}, routing_key=queue)


def _drain(connection: Connection, queue: str) -> None:
    channel = connection.channel()
    while (message := channel.basic_get(queue)) is not None:
        channel.basic_ack(message.delivery_tag)


def test_the_broker_tells_whether_triage_work_waits(broker: Connection) -> None:
    assert not queues_waiting(broker, TRIAGE_QUEUES)  # never declared: nothing waits
    _send(broker, RESULTS_QUEUE)
    assert not queues_waiting(broker, TRIAGE_QUEUES)  # results wait; no triage
    _send(broker, BACKFILL_QUEUE)
    assert queues_waiting(broker, TRIAGE_QUEUES)
    _drain(broker, BACKFILL_QUEUE)
    assert not queues_waiting(broker, TRIAGE_QUEUES)
    _send(broker, LIVE_QUEUE)
    assert queues_waiting(broker, TRIAGE_QUEUES)
    assert set(TRIAGE_QUEUES) == set(QUEUES) - {RESULTS_QUEUE}
    # On AMQP a question about a missing queue closes the channel it was asked on: the
    # connection's default channel, the one its producers publish on, must survive it.
    _send(broker, LIVE_QUEUE)
    assert queue_depths(broker, ["never-declared", LIVE_QUEUE]) == {
        "never-declared": 0,
        LIVE_QUEUE: 2,
    }
    Producer(broker.default_channel).publish({"ids": [2]}, routing_key="nowhere")


def _done_rows(sessions: sessionmaker[Session], archive: Path, count: int) -> list[int]:
    archive.mkdir(parents=True)
    rng = np.random.default_rng(7)
    ids: list[int] = []
    for n in range(count):
        path = archive / f"{n}.png"
        Image.fromarray(rng.integers(0, 255, (96, 80), dtype=np.uint8)).save(path)
        sha = read_image(path).metadata.file_sha256
        with sessions.begin() as session:
            entry, _ = admit(session, Arrival(sha, path.name, f"/inbox/{path.name}"))
            record_scored(session, entry, SCORED, str(path))
            ids.append(entry.id)
    return ids


def test_a_results_task_publishes_one_row_then_hands_the_rest_back_while_triage_waits(
    settings: Settings, sessions: sessionmaker[Session], broker: Connection, tmp_path: Path
) -> None:
    ids = _done_rows(sessions, tmp_path / "archive", 4)
    scorer = CountingScorer()

    def triage_waiting() -> bool:
        return queues_waiting(broker, TRIAGE_QUEUES)

    _send(broker, LIVE_QUEUE)  # a triage task waits
    first = publish_rows(settings, sessions, scorer, [*ids, 999], triage_waiting)
    assert first == Remaining(pending=[], deferred=ids[1:])
    assert scorer.heatmapped == [1]
    assert len(list(settings.overlays.glob("*.heat.png"))) == 1

    _drain(broker, LIVE_QUEUE)  # the triage work was taken: the rest runs to its end
    assert publish_rows(settings, sessions, scorer, first.deferred, triage_waiting) == Remaining()
    assert scorer.heatmapped == [1, 3]  # each row once; the rest in one Grad-CAM call
    assert len(list(settings.overlays.glob("*.heat.png"))) == len(ids)


def test_on_a_pushing_broker_results_that_find_triage_waiting_hand_back_every_row(
    settings: Settings, sessions: sessionmaker[Session], broker: Connection, tmp_path: Path
) -> None:
    """RabbitMQ delivers a results message after every triage batch: there a results task
    that finds triage work waiting publishes nothing (``progress_rows=0``) and hands its
    whole batch back, as Redis would never have started it."""
    ids = _done_rows(sessions, tmp_path / "archive", 3)
    scorer = CountingScorer()
    _send(broker, BACKFILL_QUEUE)
    result = publish_rows(
        settings, sessions, scorer, ids, lambda: queues_waiting(broker, TRIAGE_QUEUES), 0
    )
    assert result == Remaining(pending=[], deferred=ids)
    assert scorer.heatmapped == [] and not settings.overlays.exists()


def test_triage_work_that_arrives_while_results_run_stops_them_after_the_row_in_hand(
    settings: Settings, sessions: sessionmaker[Session], broker: Connection, tmp_path: Path
) -> None:
    ids = _done_rows(sessions, tmp_path / "archive", 4)
    asked: list[bool] = []

    def triage_arrives() -> bool:
        """Nothing waits when the task starts; a live file arrives during its first row."""
        asked.append(queues_waiting(broker, TRIAGE_QUEUES))
        if len(asked) == 1:
            _send(broker, LIVE_QUEUE)
        return asked[-1]

    result = publish_rows(settings, sessions, CountingScorer(), ids, triage_arrives)
    assert result == Remaining(pending=[], deferred=ids[1:])
    assert asked == [False, True]
    assert len(list(settings.overlays.glob("*.heat.png"))) == 1


def test_with_nothing_waiting_a_results_task_publishes_its_whole_batch(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    ids = _done_rows(sessions, tmp_path / "archive", 3)
    missing = tmp_path / "archive" / "not-yet.png"
    with sessions.begin() as session:
        moving, _ = admit(session, Arrival("b" * 64, "b.png", "/inbox/b.png"))
        record_scored(session, moving, SCORED, str(missing))
    scorer = CountingScorer()
    result = publish_rows(settings, sessions, scorer, [moving.id, *ids])
    assert result == Remaining(pending=[moving.id], deferred=[])
    assert scorer.heatmapped == [3]  # one Grad-CAM call for the batch
    assert len(list(settings.overlays.glob("*.heat.png"))) == len(ids)


@pytest.mark.services
@pytest.mark.tf  # the task loads the shipped model for its Grad-CAM
def test_the_results_task_sends_the_rows_it_handed_back_as_one_new_task(
    tmp_path: Path, pg_url: str, redis_url: str
) -> None:
    """The Celery task itself, in a process of its own on the real Redis and PostgreSQL:
    with a live message waiting, it publishes one row and puts one results message on the
    queue naming the other rows (Flower shows them); run again on those with nothing
    waiting, it publishes them and sends nothing more."""
    import json
    import subprocess
    import sys

    import redis as redis_client

    from db import migrate
    from db.engine import make_engine, make_session_factory
    from tests.processes import service_env

    migrate.upgrade(pg_url)
    engine = make_engine(pg_url)
    ids = _done_rows(make_session_factory(engine), tmp_path / "archive", 3)
    engine.dispose()
    env = service_env(tmp_path, pg_url, redis_url)
    overlays = tmp_path / "data" / "overlays"

    def run_task(entry_ids: list[int]) -> None:
        code = f"from worker.tasks import publish; publish.apply(args=({entry_ids!r},)).get()"
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]

    with Connection(redis_url) as connection:
        _send(connection, LIVE_QUEUE)
        run_task(ids)
        broker = redis_client.Redis.from_url(redis_url)
        sent = [json.loads(raw) for raw in broker.lrange(RESULTS_QUEUE, 0, -1)]
        assert [m["headers"]["argsrepr"] for m in sent] == [repr((ids[1:],))]
        assert len(list(overlays.glob("*.heat.png"))) == 1
        _drain(connection, LIVE_QUEUE)
        broker.delete(RESULTS_QUEUE)  # as the worker takes the message
        run_task(ids[1:])
        assert broker.llen(RESULTS_QUEUE) == 0
        assert len(list(overlays.glob("*.heat.png"))) == len(ids)
