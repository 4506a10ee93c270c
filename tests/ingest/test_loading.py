"""load_scorable: header, eligibility, then pixels; ineligible files never reach the decoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ingest import IngestError, Reason, load_scorable
from tests.ingest.dicom_factory import native_8bit, write

GRID = (np.arange(30 * 40).reshape(30, 40) % 256).astype(np.uint8)


def test_eligible_dicom_is_decoded(tmp_path: Path) -> None:
    image, verdict = load_scorable(write(native_8bit(GRID), tmp_path / "a.dcm"))
    assert verdict.eligible and verdict.flags == ()
    np.testing.assert_allclose(image.pixels, GRID.astype(np.float32), atol=1e-3)


def test_lateral_is_rejected_before_its_pixels_are_decoded(tmp_path: Path) -> None:
    ds = native_8bit(GRID)
    ds.ViewPosition = "LL"
    ds.PixelData = b"\x00" * 10  # undecodable: reading it would be 'truncated'
    with pytest.raises(IngestError) as caught:
        load_scorable(write(ds, tmp_path / "lat.dcm"))
    assert caught.value.reason is Reason.LATERAL_VIEW
    assert "(0018,5101)" in caught.value.message


def test_source_jpeg_is_scored_with_unverified_flag(source_jpeg: Path) -> None:
    image, verdict = load_scorable(source_jpeg)
    assert verdict.eligible and "eligibility_unverified" in verdict.flags
    assert image.pixels.dtype == np.float32


def test_rgb_dicom_carries_the_colour_flag(tmp_path: Path) -> None:
    ds = native_8bit(GRID)
    from tests.ingest.dicom_factory import set_pixels

    set_pixels(ds, np.stack([GRID] * 3, axis=-1), photometric="RGB")
    _, verdict = load_scorable(write(ds, tmp_path / "rgb.dcm"))
    assert "color_converted" in verdict.flags
