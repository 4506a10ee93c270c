"""Fixtures: a CR radiograph written from a real dataset JPEG, and an overlay to burn in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.overlay import overlay_heatmap
from tests.support.pacs import pneumonia_grey, synthetic_heatmap, write_radiograph


@pytest.fixture(scope="session")
def reference_grey() -> np.ndarray:
    return pneumonia_grey()


@pytest.fixture
def source_file(tmp_path: Path, reference_grey: np.ndarray) -> Path:
    return write_radiograph(tmp_path / "inbox" / "chest.dcm", reference_grey)


@pytest.fixture
def overlay(reference_grey: np.ndarray) -> Image.Image:
    return overlay_heatmap(reference_grey.astype(np.float32), synthetic_heatmap())
