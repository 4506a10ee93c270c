"""Migrations are reviewed code: they build the models' schema exactly, up and down."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from db import migrate


def _upgrade_check_downgrade(url: str) -> None:
    assert not migrate.is_current(url)
    migrate.upgrade(url)
    migrate.check(url)  # raises if the models and the migrations disagree
    assert migrate.is_current(url)
    engine = create_engine(url)
    indexes = {i["name"] for i in inspect(engine).get_indexes("worklist")}
    assert "ix_worklist_reading_order" in indexes
    engine.dispose()
    migrate.upgrade(url, "head")  # idempotent
    from alembic import command

    command.downgrade(migrate.alembic_config(url), "base")
    engine = create_engine(url)
    assert "worklist" not in inspect(engine).get_table_names()
    engine.dispose()


def test_migrations_on_empty_sqlite(tmp_path: Path) -> None:
    _upgrade_check_downgrade(f"sqlite:///{tmp_path / 'w.sqlite3'}")


@pytest.mark.services
def test_migrations_on_empty_postgresql(pg_url: str) -> None:
    _upgrade_check_downgrade(pg_url)
