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


def heatmap_file(overlay_dir: Path, file_sha256: str) -> Path:
    """Where the Grad-CAM heatmap itself (not blended) of that file lives: the review page's
    separate heatmap layer (:mod:`web.films`)."""
    return overlay_file(overlay_dir, file_sha256).with_suffix(".heat.png")


def save_heatmap(heatmap: np.ndarray, overlay_dir: Path, file_sha256: str) -> Path:
    """Store ``heatmap`` (values in [0, 1], the model's input grid) as an 8-bit grey PNG.

    The heatmap as Grad-CAM made it, scaled to its own peak; the page colours it and scales
    it by the row's probability, so its colours mean the same on every case. A few KB.
    """
    target = heatmap_file(overlay_dir, file_sha256)
    overlay_dir.mkdir(parents=True, exist_ok=True)
    levels = np.rint(np.clip(np.nan_to_num(heatmap, nan=0.0), 0.0, 1.0) * 255).astype(np.uint8)
    partial = target.with_name(f".{target.name}.part")
    Image.fromarray(levels, mode="L").save(partial, format="PNG")
    partial.replace(target)
    return target


THUMBNAIL_WEBP_SIDE = 96
#: A stored thumbnail larger than this is not one the worker wrote: not served.
THUMBNAIL_MAX_BYTES = 64 * 1024


def thumbnail_file(overlay_dir: Path, file_sha256: str) -> Path:
    """Where the worklist's thumbnail of that file lives (the plain film, no heatmap)."""
    return overlay_file(overlay_dir, file_sha256).with_suffix(".thumb.webp")


def thumbnail_webp(grey: np.ndarray) -> bytes:
    """Display levels (0..255) as a WebP :data:`THUMBNAIL_WEBP_SIDE` px on its longer side:
    2-4 KB for a chest film, so a page of 100 rows stays light."""
    image = Image.fromarray(np.rint(grey).clip(0, 255).astype(np.uint8), mode="L")
    image.thumbnail((THUMBNAIL_WEBP_SIDE, THUMBNAIL_WEBP_SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", quality=60, method=4)
    return buffer.getvalue()


def save_thumbnail(grey: np.ndarray, overlay_dir: Path, file_sha256: str) -> Path:
    """Store the worklist thumbnail of the film whose display levels are ``grey``, made once
    by the worker (which has the film decoded) instead of by the page on every first view."""
    target = thumbnail_file(overlay_dir, file_sha256)
    overlay_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.part")
    partial.write_bytes(thumbnail_webp(grey))
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
