from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.settings import folder_settings
from worker.settings import Settings


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return folder_settings(tmp_path, database_url, batch_size=4)
