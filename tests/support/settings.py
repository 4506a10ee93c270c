"""Worker settings for a test: every folder under ``tmp_path``, on the test's database."""

from __future__ import annotations

from pathlib import Path

from worker.settings import Settings


def folder_settings(tmp_path: Path, database_url: str, *, batch_size: int) -> Settings:
    """Data, inbox, archive and quarantine under ``tmp_path`` (none created)."""
    return Settings(
        data_dir=tmp_path / "data",
        inbox=tmp_path / "inbox",
        archive=tmp_path / "archive",
        quarantine=tmp_path / "quarantine",
        database_url=database_url,
        batch_size=batch_size,
    )
