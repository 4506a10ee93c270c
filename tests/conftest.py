"""Shared fixtures: throwaway PostgreSQL databases, a private Redis database, the corpus.

Service-needing tests use the real servers on 127.0.0.1 (``.ci/run`` starts them) and fail,
rather than skip, when they are missing: a skipped test cannot fail.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from db import migrate
from db.engine import make_engine, make_session_factory

PG_ADMIN = os.environ.get("CXR_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_TEST_DB = int(os.environ.get("CXR_TEST_REDIS_DB", "13"))


def _pg_admin_url() -> str:
    return PG_ADMIN


def create_pg_database() -> str:
    """Create ``cxr_test_<random>`` and return its SQLAlchemy URL."""
    name = f"cxr_test_{secrets.token_hex(4)}"
    with psycopg.connect(_pg_admin_url(), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    base = _pg_admin_url().rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    return f"{base}/{name}"


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(_pg_admin_url(), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url() -> Iterator[str]:
    """An empty PostgreSQL database for one test, dropped afterwards."""
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis database number of its own, flushed before and after."""
    url = f"redis://127.0.0.1:6379/{REDIS_TEST_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty worklist database: SQLite and PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'worklist.sqlite3'}"
        migrate.upgrade(url)
        yield url
        return
    url = create_pg_database()
    try:
        migrate.upgrade(url)
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped model when it is there; otherwise an untrained network of the same
    architecture with a complete model card (the system under test is the plumbing, and the
    comparison with ``cxr-triage predict`` holds for any weights)."""
    from model.card import SHIPPED_DIR
    from tests.models import save_untrained_model

    if (SHIPPED_DIR / "model_card.json").is_file():
        return SHIPPED_DIR
    return save_untrained_model(tmp_path_factory.mktemp("model"))
