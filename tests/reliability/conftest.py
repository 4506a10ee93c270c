"""Fixtures of the fault-injection suite: private servers these tests own and break.

Outages are simulated on a Redis and a PostgreSQL cluster started per test on free ports
(:mod:`tests.support.servers`); the shared servers on 127.0.0.1:5432/6379 are never touched.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
    settings.inbox_dir.mkdir(parents=True)
    return settings
