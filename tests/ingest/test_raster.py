"""JPEG and PNG: 8 and 16 bit, grey or colour, EXIF orientation, size bound, broken files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ingest import IngestError, Reason, SourceKind, read_header, read_image
from ingest.raster import read_raster_pixels

GRID = (np.arange(40 * 60).reshape(40, 60) % 256).astype(np.uint8)


def test_eight_bit_png_is_read_as_is(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.fromarray(GRID, mode="L").save(path)
    image = read_image(path)
    assert image.metadata.kind is SourceKind.PNG
    np.testing.assert_array_equal(image.pixels, GRID.astype(np.float32))


def test_sixteen_bit_png_is_scaled_to_display_levels(tmp_path: Path) -> None:
    wide = GRID.astype(np.uint16) * 257
    path = tmp_path / "a16.png"
    Image.fromarray(wide).save(path)
    image = read_image(path)
    assert image.normalization.bits_stored == 16
    np.testing.assert_allclose(image.pixels, GRID.astype(np.float32), atol=1e-3)


def test_rgb_jpeg_becomes_luma_and_says_so(tmp_path: Path) -> None:
    rgb = np.stack([GRID, GRID, GRID], axis=-1)
    path = tmp_path / "rgb.png"
    Image.fromarray(rgb, mode="RGB").save(path)
    image = read_image(path)
    np.testing.assert_allclose(image.pixels, GRID.astype(np.float32), atol=1.0)
    assert "color:rgb_to_luma" in image.normalization.steps


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    marked = np.zeros((20, 40), dtype=np.uint8)
    marked[0, 39] = 255  # top-right pixel
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    path = tmp_path / "rot.jpg"
    Image.fromarray(marked, mode="L").save(path, quality=100, exif=exif)
    image = read_image(path)
    assert image.pixels.shape == (40, 20)
    assert image.pixels[39, 19] > 128  # top-right moved to bottom-right
    assert image.normalization.steps[0] == "exif_transpose:orientation_6"


def test_image_over_the_pixel_bound_is_too_large(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((200, 300), dtype=np.uint8), mode="L").save(path)
    with pytest.raises(IngestError) as caught:
        read_raster_pixels(path, max_pixels=50_000)
    assert caught.value.reason is Reason.TOO_LARGE


def test_truncated_jpeg_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    Image.fromarray(GRID, mode="L").save(path, quality=90)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(path.read_bytes()[:200])
    with pytest.raises(IngestError) as caught:
        read_image(cut)
    assert caught.value.reason in {Reason.TRUNCATED, Reason.CORRUPT}


def test_raster_header_is_the_content_hash_and_name(tmp_path: Path) -> None:
    path = tmp_path / "x-ray.png"
    Image.fromarray(GRID, mode="L").save(path)
    metadata = read_header(path)
    assert metadata.source_name == "x-ray.png"
    assert len(metadata.file_sha256) == 64
    assert metadata.sop_instance_uid is None and metadata.modality is None
