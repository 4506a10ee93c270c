from __future__ import annotations

from pathlib import Path

import pytest

from worker.settings import Settings


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        inbox=tmp_path / "inbox",
        archive=tmp_path / "archive",
        quarantine=tmp_path / "quarantine",
        database_url=database_url,
        batch_size=4,
    )
