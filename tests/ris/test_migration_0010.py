"""Migration 0010 (the RIS kinds of ``result_objects``) on SQLite and PostgreSQL: SR/SC rows of
an older revision survive it (SQLite copies the table), the new kinds are accepted and any
other refused, and a downgrade takes the RIS rows out and leaves the SR/SC rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from db import migrate
from tests.conftest import create_pg_database, drop_pg_database

ROW = (
    "INSERT INTO worklist (file_sha256, source_name, source_path, status, attempts, flags, "
    "received_at) VALUES ('{sha}', 'a.dcm', '/a.dcm', 'done', 0, '', CURRENT_TIMESTAMP)"
)
OBJECT = (
    "INSERT INTO result_objects (entry_id, kind, state, attempts, created_at, updated_at, "
    "path) VALUES ({entry}, '{kind}', 'pending', 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, '/o')"
)


def _check(url: str) -> None:
    config = migrate.alembic_config(url)
    command.upgrade(config, "0009")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(ROW.format(sha="a" * 64)))
        entry = connection.execute(text("SELECT id FROM worklist")).scalar_one()
        for kind in ("sr", "sc"):
            connection.execute(text(OBJECT.format(entry=entry, kind=kind)))
        with pytest.raises(IntegrityError), connection.begin_nested():
            connection.execute(text(OBJECT.format(entry=entry, kind="hl7")))
    command.upgrade(config, "head")
    migrate.check(url)
    with engine.begin() as connection:
        kinds = connection.execute(text("SELECT kind FROM result_objects ORDER BY id")).scalars()
        assert list(kinds) == ["sr", "sc"]
        for kind in ("hl7", "fhir"):
            connection.execute(text(OBJECT.format(entry=entry, kind=kind)))
        with pytest.raises(IntegrityError), connection.begin_nested():
            connection.execute(text(OBJECT.format(entry=entry, kind="mail")))
    command.downgrade(config, "0009")
    with engine.begin() as connection:
        kinds = connection.execute(text("SELECT kind FROM result_objects ORDER BY id")).scalars()
        assert list(kinds) == ["sr", "sc"]
    engine.dispose()
    command.upgrade(config, "head")


def test_0010_on_sqlite(tmp_path: Path) -> None:
    _check(f"sqlite:///{tmp_path / 'w.sqlite3'}")


@pytest.mark.services
def test_0010_on_postgresql() -> None:
    url = create_pg_database()
    try:
        _check(url)
    finally:
        drop_pg_database(url)
