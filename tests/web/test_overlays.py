"""Overlay PNGs on disk and the thumbnail renderer's refusal to read outside the archive."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from web.overlays import STORED_MAX_SIDE, Thumbnails, overlay_file, save_overlay

SHA = "a" * 64


def test_saved_overlay_is_a_bounded_png_named_by_content_hash(tmp_path: Path):
    big = Image.new("RGB", (3000, 2000), (200, 10, 10))
    path = save_overlay(big, tmp_path / "overlays", SHA)
    assert path == tmp_path / "overlays" / f"{SHA}.png"
    with Image.open(path) as stored:
        assert stored.format == "PNG" and max(stored.size) == STORED_MAX_SIDE
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left


def test_overlay_names_must_be_content_hashes(tmp_path: Path):
    for bad in ("../../etc/passwd", "A" * 64, "a" * 63):
        with pytest.raises(ValueError):
            overlay_file(tmp_path, bad)


def test_archived_images_outside_the_archive_are_not_rendered(tmp_path: Path):
    archive, elsewhere = tmp_path / "archive", tmp_path / "elsewhere"
    archive.mkdir()
    elsewhere.mkdir()
    picture = np.full((64, 64), 128, dtype=np.uint8)
    picture[:, 32:] = 200  # not flat: a blank image is refused by the reader
    Image.fromarray(picture).save(elsewhere / "x.png")
    Image.fromarray(picture).save(archive / "y.png")
    (archive / "link.png").symlink_to(elsewhere / "x.png")
    thumbnails = Thumbnails(tmp_path / "overlays", archive)
    assert thumbnails.png(SHA, str(elsewhere / "x.png"), 32) is None
    assert thumbnails.png(SHA, str(archive / "link.png"), 32) is None
    assert thumbnails.png(SHA, str(archive / "../elsewhere/x.png"), 32) is None
    inside = thumbnails.png(SHA, str(archive / "y.png"), 32)
    assert inside is not None
    with Image.open(io.BytesIO(inside)) as image:
        assert image.size == (32, 32)
        pixels = np.asarray(image.convert("L"), dtype=int)
        assert pixels[16, 4] < pixels[16, 28]  # dark left half, bright right half
