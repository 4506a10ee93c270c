from __future__ import annotations

from pathlib import Path

import pytest


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
