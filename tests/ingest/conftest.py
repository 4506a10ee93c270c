"""Fixtures: real dataset JPEGs (the committed sample) and the DICOM corpus written from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.ingest.dicom_factory import jpeg_grey, sample_jpegs


@pytest.fixture(scope="session")
def source_jpegs() -> list[Path]:
    return sample_jpegs(per_class=1)


@pytest.fixture(scope="session")
def source_jpeg(source_jpegs: list[Path]) -> Path:
    return source_jpegs[0]


@pytest.fixture(scope="session")
def reference(source_jpeg: Path) -> np.ndarray:
    """The first source JPEG's 8-bit grey pixels."""
    return jpeg_grey(source_jpeg)
