"""The review page's images: small thumbnails, the film at the display's size or in full,
the stored values for window/level, and the heatmap as a layer of its own.

Every film is decoded from the archived original by ingest's own readers (never from a
blended overlay), so the page shows what the model was given ("as sent") and, on demand,
the stored values behind it. The heatmap is the worker's Grad-CAM map (``<sha>.heat.png``,
:func:`web.overlays.save_heatmap`), coloured here with viridis (readable with every common
colour-vision deficiency) and scaled by the row's probability: its colours and opacity mean
the same on every case, so a ROUTINE case at 6 % stays clear where an URGENT one at 97 % is
marked. Only files inside the archive folder are ever read.

Decoding costs up to a second for a large compressed film: at most :data:`DECODES` run at
once (a reader flicking through cases cannot starve the page), and what was made is kept in
a byte-bounded cache, keyed by the file's content hash, what was asked and the file's mtime.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from ingest import IngestError, read_image
from ingest.stored import StoredFilm, read_stored
from web.overlays import (
    SHA256,
    THUMBNAIL_MAX_BYTES,
    THUMBNAIL_WEBP_SIDE,
    heatmap_file,
    thumbnail_file,
    thumbnail_webp,
)

log = logging.getLogger(__name__)

THUMBNAIL_SIDE = THUMBNAIL_WEBP_SIDE
#: The sizes a display image is made at (longer side): a request is rounded up to the next
#: one, so the cache holds a few sizes per film and no one can fill it with odd sizes.
DISPLAY_SIDES = (512, 768, 1024, 1536, 2048, 3072)
CACHE_BYTES = 160 * 2**20
DECODES = 2
DECODE_WAIT_S = 30.0
#: Bumped when what a URL returns changes, so browsers' copies (ETag) are not reused.
FORMAT = "2"
FILM_MAGIC = b"CXRFILM1"
#: Heat (Grad-CAM x probability) below this is transparent; full opacity at HEAT_FULL.
HEAT_CLEAR, HEAT_FULL = 0.2, 0.8


class BusyError(Exception):
    """Too many films are being decoded: try again in a moment (503)."""


class _Cache:
    """Least recently used bytes, bounded by their total size."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[object, ...], bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[object, ...]) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: tuple[object, ...], data: bytes) -> None:
        if len(data) > self.max_bytes // 4:
            return  # one huge film must not evict everything else
        with self._lock:
            old = self._items.pop(key, None)
            self._size -= len(old) if old is not None else 0
            self._items[key] = data
            self._size += len(data)
            while self._size > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._size -= len(evicted)


def display_side(requested: int | None) -> int | None:
    """The display size made for a request: the next of :data:`DISPLAY_SIDES` at or above
    it; None (full resolution) above the largest."""
    if requested is None:
        return None
    for side in DISPLAY_SIDES:
        if requested <= side:
            return side
    return None


class Films:
    """What the review page shows of a row's file (``None`` where there is nothing to show)."""

    def __init__(
        self, overlay_dir: Path, archive_dir: Path, cache_bytes: int = CACHE_BYTES
    ) -> None:
        self.overlay_dir = overlay_dir
        self.archive_dir = archive_dir.resolve()
        self._cache = _Cache(cache_bytes)
        self._decodes = threading.BoundedSemaphore(DECODES)

    # -- where things are -----------------------------------------------------------------

    def archived(self, archived_path: str | None) -> Path | None:
        """The archived original, only if it really lies inside the archive folder."""
        if not archived_path:
            return None
        path = Path(archived_path)
        try:
            if path.is_symlink() or not path.is_file():
                return None
            resolved = path.resolve()
        except (OSError, ValueError):  # a NUL in the name, a loop, a permission
            return None
        return resolved if resolved.is_relative_to(self.archive_dir) else None

    def heatmap_path(self, file_sha256: str) -> Path | None:
        if not SHA256.fullmatch(file_sha256):
            return None
        path = heatmap_file(self.overlay_dir, file_sha256)
        return path if path.is_file() and not path.is_symlink() else None

    def etag(self, source: Path, *what: object) -> str:
        """A strong validator for what is made of ``source``: changes with the file."""
        stat = source.stat()
        seed = "|".join(str(part) for part in (FORMAT, source, stat.st_mtime_ns, *what))
        return '"' + hashlib.sha256(seed.encode()).hexdigest()[:32] + '"'

    # -- what is made ---------------------------------------------------------------------

    def thumbnail(self, source: Path, file_sha256: str) -> bytes | None:
        """A WebP of the plain film, :data:`THUMBNAIL_SIDE` px on its longer side (a few KB):
        the one the worker stored, else made here from the archived original."""
        stored = self.stored_thumbnail(file_sha256)
        if stored is not None:
            try:
                return stored.read_bytes()
            except OSError:
                pass

        def make() -> bytes | None:
            image = self._grey(source, THUMBNAIL_SIDE * 2)
            return None if image is None else thumbnail_webp(np.asarray(image))

        return self._made(("thumb", source), source, make)

    def stored_thumbnail(self, file_sha256: str) -> Path | None:
        if not SHA256.fullmatch(file_sha256):
            return None
        path = thumbnail_file(self.overlay_dir, file_sha256)
        try:
            if path.is_symlink() or not path.is_file():
                return None
            return path if path.stat().st_size <= THUMBNAIL_MAX_BYTES else None
        except OSError:
            return None

    def display(self, source: Path, max_side: int | None) -> bytes | None:
        """An 8-bit grey PNG of the film as the model was given it ("as sent"), at most
        ``max_side`` px on its longer side (None: full resolution)."""

        def make() -> bytes | None:
            image = self._grey(source, max_side)
            if image is None:
                return None
            if max_side is not None:
                image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", compress_level=3)
            return buffer.getvalue()

        return self._made(("display", source, max_side), source, make)

    def film(self, source: Path) -> bytes | None:
        """The stored values for window/level, gzip-compressed (:func:`encode_film`)."""

        def make() -> bytes | None:
            with self._decoding():
                try:
                    stored = read_stored(source)
                except IngestError as error:
                    log.warning("archived film no longer reads: %s", error.reason)
                    return None
            return gzip.compress(encode_film(stored), compresslevel=1, mtime=0)

        return self._made(("film", source), source, make)

    def heatmap(self, file_sha256: str, probability: float) -> bytes | None:
        """The heatmap layer: an RGBA PNG at the heatmap's own grid (the page stretches it
        over the film, as the model's input was squashed from it)."""
        path = self.heatmap_path(file_sha256)
        if path is None:
            return None

        def make() -> bytes | None:
            try:
                with Image.open(path) as stored:
                    if stored.size[0] * stored.size[1] > 1024 * 1024:
                        return None  # the worker writes the model's grid, never this
                    levels = np.asarray(stored.convert("L"), dtype=np.float32) / 255
            except (OSError, ValueError, Image.DecompressionBombError):
                return None
            return heat_png(levels, probability)

        return self._made(("heat", path, round(probability, 4)), path, make)

    # -- helpers ----------------------------------------------------------------------------

    def _grey(self, source: Path, min_side: int | None) -> Image.Image | None:
        """The film's display levels, decoded only as large as ``min_side`` needs."""
        with self._decoding():
            try:
                pixels = read_image(source, min_side=min_side).pixels
            except IngestError as error:
                log.warning("archived film no longer reads: %s", error.reason)
                return None
        return Image.fromarray(np.rint(pixels).clip(0, 255).astype(np.uint8), mode="L")

    def _decoding(self) -> _Slot:
        return _Slot(self._decodes)

    def _made(
        self, key: tuple[object, ...], source: Path, make: Callable[[], bytes | None]
    ) -> bytes | None:
        try:
            full_key = (*key, source.stat().st_mtime_ns)
        except OSError:
            return None
        cached = self._cache.get(full_key)
        if cached is not None:
            return cached
        data = make()
        if data is not None:
            self._cache.put(full_key, data)
        return data


class _Slot:
    """One of the decode slots, for a ``with`` block; :class:`BusyError` after a wait."""

    def __init__(self, semaphore: threading.BoundedSemaphore) -> None:
        self._semaphore = semaphore

    def __enter__(self) -> None:
        if not self._semaphore.acquire(timeout=DECODE_WAIT_S):
            raise BusyError("every decode slot is busy")

    def __exit__(self, *exc: object) -> None:
        self._semaphore.release()


def encode_film(film: StoredFilm) -> bytes:
    """The viewer's film format (``web/static/viewer.js`` reads it):

    ``CXRFILM1``, a uint32 (little-endian) length *n*, *n* bytes of UTF-8 JSON (width,
    height, units, slope, intercept, inverted, windows, display_length, voi), the display
    table (``display_length`` bytes, one display level per value), zero or one byte of
    padding to an even offset, then width x height uint16 values, little-endian, row by row.
    Plain bytes rather than a 16-bit PNG: a browser draws a PNG into a canvas at 8 bits.
    """
    header = json.dumps(
        {
            "width": film.width,
            "height": film.height,
            "units": film.units,
            "slope": film.slope,
            "intercept": film.intercept,
            "inverted": film.inverted,
            "windows": [{"name": w.name, "low": w.low, "high": w.high} for w in film.windows],
            "display_length": int(film.display.size),
            "voi": film.voi,
        }
    ).encode()
    head = FILM_MAGIC + len(header).to_bytes(4, "little") + header + film.display.tobytes()
    if len(head) % 2:
        head += b"\x00"
    return head + film.values.astype("<u2", copy=False).tobytes()


def decode_film(data: bytes) -> tuple[dict[str, object], np.ndarray, np.ndarray]:
    """:func:`encode_film` read back (for tests and tools): header, display table, values."""
    if data[:8] != FILM_MAGIC:
        raise ValueError("not a cxr-triage film")
    length = int.from_bytes(data[8:12], "little")
    header = json.loads(data[12 : 12 + length])
    start = 12 + length
    table_length = int(header["display_length"])
    table = np.frombuffer(data, np.uint8, table_length, start)
    start += table_length + (start + table_length) % 2
    count = int(header["width"]) * int(header["height"])
    values = np.frombuffer(data, "<u2", count, start).reshape(header["height"], header["width"])
    return header, table, values


_VIRIDIS: np.ndarray | None = None


def _viridis() -> np.ndarray:
    """viridis as 256 RGB entries (matplotlib's table, loaded on first use)."""
    global _VIRIDIS
    if _VIRIDIS is None:
        from matplotlib import colormaps

        levels = np.linspace(0.0, 1.0, 256)
        _VIRIDIS = np.rint(colormaps["viridis"](levels)[:, :3] * 255).astype(np.uint8)
    return _VIRIDIS


def heat_png(levels: np.ndarray, probability: float) -> bytes:
    """RGBA PNG of ``levels`` (Grad-CAM, 0..1 to its own peak) x ``probability``: viridis
    colour, transparent below :data:`HEAT_CLEAR`, opaque from :data:`HEAT_FULL`."""
    heat = np.clip(np.nan_to_num(levels) * float(np.clip(probability, 0.0, 1.0)), 0.0, 1.0)
    index = np.rint(heat * 255).astype(np.uint8)
    alpha = np.clip((heat - HEAT_CLEAR) / (HEAT_FULL - HEAT_CLEAR), 0.0, 1.0)
    rgba = np.dstack([_viridis()[index], np.rint(alpha * 255).astype(np.uint8)])
    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG")
    return buffer.getvalue()
