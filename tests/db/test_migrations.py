"""Migrations are reviewed code: they build the models' schema exactly, up and down."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from db import migrate


def _upgrade_check_downgrade(url: str) -> None:
    assert not migrate.is_current(url)
    migrate.upgrade(url)
    migrate.check(url)  # raises if the models and the migrations disagree
    assert migrate.is_current(url)
    engine = create_engine(url)
    indexes = {i["name"] for i in inspect(engine).get_indexes("worklist")}
    assert {"ix_worklist_reading_order", "ix_worklist_study_key"} <= indexes
    assert {"reading_list", "reading_list_apart"} <= set(inspect(engine).get_view_names())
    engine.dispose()
    migrate.upgrade(url, "head")  # idempotent
    from alembic import command

    command.downgrade(migrate.alembic_config(url), "base")
    engine = create_engine(url)
    assert "worklist" not in inspect(engine).get_table_names()
    assert inspect(engine).get_view_names() == []
    engine.dispose()


def test_migrations_on_empty_sqlite(tmp_path: Path) -> None:
    _upgrade_check_downgrade(f"sqlite:///{tmp_path / 'w.sqlite3'}")


@pytest.mark.services
def test_migrations_on_empty_postgresql(pg_url: str) -> None:
    _upgrade_check_downgrade(pg_url)


def _rows_survive_0006(url: str) -> None:
    """Rows written before the reading list existed get their tier and study key from 0006
    (PostgreSQL computes the stored columns in the upgrade, SQLite on reading)."""
    migrate.upgrade(url, "0005")
    engine = create_engine(url)
    with engine.begin() as connection:
        for n, (status, rank, reason, study) in enumerate(
            [
                ("done", 2, None, "1.2.3"),
                ("rejected", None, "lateral_view", "1.2.3"),
                ("rejected", None, "not_chest_radiograph", None),
                ("queued", None, None, None),
            ]
        ):
            connection.execute(
                text(
                    "INSERT INTO worklist (file_sha256, source_name, source_path, status, "
                    "priority_rank, reason, study_instance_uid, flags, attempts, received_at) "
                    "VALUES (:sha, 'f', 'f', :status, :rank, :reason, :study, '', 0, :at)"
                ),
                {
                    "sha": f"{n:064x}",
                    "status": status,
                    "rank": rank,
                    "reason": reason,
                    "study": study,
                    "at": datetime(2026, 11, 29, 8, n, tzinfo=UTC),
                },
            )
    engine.dispose()
    migrate.upgrade(url)
    engine = create_engine(url)
    with engine.connect() as connection:
        listed = connection.execute(
            text("SELECT position, tier, entry_id, images FROM reading_list")
        ).all()
    engine.dispose()
    assert [tuple(row) for row in listed] == [
        (1, "suspect", 3, 1),
        (2, "suspect", 4, 1),
        (3, "routine", 1, 2),
    ]


def test_rows_from_before_0006_are_listed_on_sqlite(tmp_path: Path) -> None:
    _rows_survive_0006(f"sqlite:///{tmp_path / 'w.sqlite3'}")


@pytest.mark.services
def test_rows_from_before_0006_are_listed_on_postgresql(pg_url: str) -> None:
    _rows_survive_0006(pg_url)
