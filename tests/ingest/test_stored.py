"""The viewer's film (ingest/stored.py): the stored values, exact, and a display table that
reproduces ingest's display levels pixel for pixel, for every encoding the readers handle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ingest import IngestError
from ingest.readers import read_image
from ingest.stored import DISPLAY_SCALE, read_stored
from tests.ingest import dicom_factory as factory

REF = (np.add.outer(np.arange(48), np.arange(64)) * 3 % 256).astype(np.uint8)
VARIANTS = [
    "native_8bit",
    "monochrome1_8bit",
    "rescale_window_12bit",
    "monochrome1_16bit_rescale",
    "inverse_shape_monochrome1",
    "signed_16bit",
    "signed_12bit_dirty_high_bits",
    "voi_lut_nonlinear",
    "dx_for_presentation_16bit",
    "rle_16bit",
]


@pytest.mark.parametrize("variant", VARIANTS)
def test_as_sent_is_exactly_what_the_model_was_given(variant: str, tmp_path: Path):
    path = factory.write(getattr(factory, variant)(REF), tmp_path / f"{variant}.dcm")
    film = read_stored(path)
    model_input = read_image(path).pixels
    assert film.units == "stored" and film.values.dtype == np.uint16
    assert film.values.shape == model_input.shape
    assert np.array_equal(film.display[film.values], np.rint(model_input).astype(np.uint8))
    assert film.windows[-1].name == "Full range"


def test_the_stored_values_are_kept_exactly_and_the_header_window_mapped(tmp_path: Path):
    ds = factory.rescale_window_12bit(REF)  # slope 0.5, intercept -100, LINEAR window
    path = factory.write(ds, tmp_path / "w.dcm")
    film = read_stored(path)
    assert np.array_equal(film.values, REF.astype(np.uint16) * 16)
    assert (film.slope, film.intercept) == (0.5, -100.0)
    header = film.windows[0]
    assert header.name.startswith("Header window 1")
    # the window spans modality -100 .. 1940 (LINEAR: c - 0.5 +- (w - 1) / 2): stored 0 .. 4080
    assert header.low == pytest.approx(0.0, abs=1e-6)
    assert header.high == pytest.approx(4080.0, abs=1e-6)
    assert not film.inverted


def test_monochrome1_says_the_viewer_must_invert_after_the_window(tmp_path: Path):
    path = factory.write(factory.monochrome1_16bit_rescale(REF), tmp_path / "m1.dcm")
    film = read_stored(path)
    assert film.inverted
    # the header's own window, applied linearly and inverted, is the display level
    window = film.windows[0]
    t = np.clip((film.values.astype(float) - window.low) / (window.high - window.low), 0, 1)
    assert np.abs((1 - t) * 255 - film.display[film.values]).max() <= 1


def test_signed_values_are_offset_into_sixteen_bits(tmp_path: Path):
    path = factory.write(factory.signed_16bit(REF), tmp_path / "s.dcm")
    film = read_stored(path)
    assert film.intercept == -32768.0 and film.slope == 1.0  # value - 32768 = stored


def test_a_jpeg_falls_back_to_its_display_levels(tmp_path: Path):
    jpeg = factory.sample_jpegs()[0]
    film = read_stored(jpeg)
    assert film.units == "display" and film.slope == 1 / DISPLAY_SCALE
    assert np.array_equal(film.display[film.values], np.rint(read_image(jpeg).pixels))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_a_broken_archive_file_is_an_ingest_error_and_nothing_else(damage: str, tmp_path: Path):
    path = factory.write(factory.monochrome1_16bit_rescale(REF), tmp_path / "d.dcm")
    data = path.read_bytes()
    path.write_bytes(
        {"truncate": data[: len(data) - 2000], "garbage": b"DICM" * 50, "empty": b""}[damage]
    )
    with pytest.raises(IngestError):
        read_stored(path)
