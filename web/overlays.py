"""Heatmap overlays on disk, and the thumbnails the review page shows.

The worker stores each scored image's Grad-CAM overlay as ``<overlay_dir>/<file sha256>.png``
(:func:`save_overlay`); the page reads it back, so the web process never loads TensorFlow.
A row without an overlay (scored before overlays were stored, or a JPEG) shows its plain
radiograph, decoded from the archive by the same :mod:`ingest` readers the model used.
"""

from __future__ import annotations

import io
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image

from ingest import IngestError, read_image

SHA256 = re.compile(r"[0-9a-f]{64}")
STORED_MAX_SIDE = 1024
THUMBNAIL_SIDE = 160
FULL_SIDE = 1024
CACHE_ENTRIES = 256


def overlay_file(overlay_dir: Path, file_sha256: str) -> Path:
    """Where the overlay of the file with this content hash lives (the hash is checked)."""
    if not SHA256.fullmatch(file_sha256):
        raise ValueError("file_sha256 must be 64 lowercase hex digits")
    return overlay_dir / f"{file_sha256}.png"


def save_overlay(image: Image.Image, overlay_dir: Path, file_sha256: str) -> Path:
    """Store ``image`` (at most :data:`STORED_MAX_SIDE` pixels a side) as the file's overlay.

    Written under a temporary name and renamed, so the page never reads half a PNG; a
    redelivered task overwrites the same file.
    """
    target = overlay_file(overlay_dir, file_sha256)
    overlay_dir.mkdir(parents=True, exist_ok=True)
    copy = image.convert("RGB")
    copy.thumbnail((STORED_MAX_SIDE, STORED_MAX_SIDE), Image.Resampling.LANCZOS)
    partial = target.with_name(f".{target.name}.part")
    copy.save(partial, format="PNG", compress_level=1)  # 4x faster than 6, 7 % larger
    partial.replace(target)
    return target


class Thumbnails:
    """PNG bytes for a worklist row: its stored overlay, else its archived radiograph."""

    def __init__(self, overlay_dir: Path, archive_dir: Path) -> None:
        self.overlay_dir = overlay_dir
        self.archive_dir = archive_dir.resolve()
        self._cache: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()

    def png(self, file_sha256: str, archived_path: str | None, max_side: int) -> bytes | None:
        """``None`` when there is nothing to show (no overlay, no readable archived image)."""
        overlay = overlay_file(self.overlay_dir, file_sha256)
        source = overlay if overlay.is_file() else self._archived(archived_path)
        if source is None:
            return None
        key = (str(source), source.stat().st_mtime_ns, max_side)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        image = _open_overlay(source) if source == overlay else _render_radiograph(source)
        if image is None:
            return None
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
        self._cache[key] = data
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return data

    def _archived(self, archived_path: str | None) -> Path | None:
        """The archived original, only if it really lies inside the archive folder."""
        if not archived_path:
            return None
        path = Path(archived_path)
        if path.is_symlink() or not path.is_file():
            return None
        resolved = path.resolve()
        return resolved if resolved.is_relative_to(self.archive_dir) else None


def _open_overlay(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def _render_radiograph(path: Path) -> Image.Image | None:
    try:
        pixels = read_image(path).pixels
    except (IngestError, OSError):
        return None
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")
