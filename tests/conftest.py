"""Shared fixtures: throwaway PostgreSQL databases, a private Redis database, the corpus.

Service-needing tests use the real servers on 127.0.0.1 (``.ci/run`` starts them) and fail,
rather than skip, when they are missing: a skipped test cannot fail. The tests that need the
full dataset or the site sample (``tests/datasets.py``) skip without them, and the run ends
with one line per missing dataset saying which variable to set and where they looked.
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


def _redis_test_db() -> int:
    """``CXR_TEST_REDIS_DB`` (13), one lower for each pytest-xdist worker after the first
    (``-n 2``: gw0 13, gw1 12), so two workers never flush each other's queues."""
    base = int(os.environ.get("CXR_TEST_REDIS_DB", "13"))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    return (base - int(worker or 0)) % 16


REDIS_TEST_DB = _redis_test_db()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``external_data`` every test that skips without a dataset the repository does
    not carry (its ``skipif`` reason is :attr:`tests.datasets.ExternalData.skip_reason`),
    so CI can run exactly those again with the data (``-m external_data``)."""
    from tests.datasets import SKIP_PREFIX

    for item in items:
        reasons = (str(mark.kwargs.get("reason", "")) for mark in item.iter_markers("skipif"))
        if any(reason.startswith(SKIP_PREFIX) for reason in reasons):
            item.add_marker(pytest.mark.external_data)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> Iterator[None]:
    """One line per dataset the run did not find, with the number of tests it skipped: last,
    under the list of skips (``-rs``), where a newcomer reads."""
    from tests.datasets import EXTERNAL

    yield
    reasons = [str(report.longrepr) for report in terminalreporter.stats.get("skipped", [])]
    for data in EXTERNAL:
        count = sum(data.skip_reason in reason for reason in reasons)
        if count:
            terminalreporter.write_line(
                f"{count} test{'s' * (count != 1)} skipped: the {data.name} is not at "
                f"{data.path}; set {data.variable}=<folder> to run them (CI does)",
                yellow=True,
            )


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
