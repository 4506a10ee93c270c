"""Fixtures of the fault-injection suite: private servers these tests own and break.

Outages are simulated on a Redis, a RabbitMQ node and a PostgreSQL cluster started per test
on free ports (:mod:`tests.support.servers`, :mod:`tests.support.rabbitmq`); the shared
servers on 127.0.0.1:5432/5672/6379 are never touched.

``private_broker`` runs a test on each broker: Redis and RabbitMQ (quorum queues). Tests
that prove the same thing on both whatever the broker take it; the others keep
``private_redis`` (README "Scaling out" lists which run on both).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.rabbitmq import PrivateRabbitMQ
from tests.support.servers import PrivatePostgres, PrivateRedis
from tests.support.settings import folder_settings
from worker.settings import Settings


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    folder = tmp_path / "redis"
    folder.mkdir()
    server = PrivateRedis(folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["redis", "rabbitmq"])
def private_broker(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[PrivateRedis | PrivateRabbitMQ]:
    """A broker of the test's own, Redis or RabbitMQ: ``url``, ``stop()`` (SIGKILL: an
    outage) and ``start()`` (Redis comes back empty, RabbitMQ with its durable messages)."""
    if request.param == "redis":
        yield request.getfixturevalue("private_redis")
        return
    server = PrivateRabbitMQ()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Folder settings in batches of eight, the inbox created."""
    settings = folder_settings(tmp_path, database_url, batch_size=8)
    settings.inbox.mkdir(parents=True)
    return settings
