"""Bounds on what a hostile or broken file may make a reader do.

A file on the share is untrusted: its size, its claimed image dimensions and its claimed
element lengths are checked against these bounds *before* memory is allocated for them.
The defaults suit chest radiographs (the largest detectors are about 4,300 x 4,300 px,
18 MP); callers may pass tighter bounds.
"""

from __future__ import annotations

import stat
from pathlib import Path

from ingest.errors import IngestError, Reason

#: Largest file accepted, in bytes (2 GiB).
MAX_FILE_BYTES = 2 * 1024**3
#: Largest decoded image accepted, in pixels (rows x columns x samples x frames; 100 MP).
MAX_PIXELS = 100_000_000
#: Largest inflated dataset of a Deflated Explicit VR Little Endian file, in bytes: the
#: largest pixel count at 16 bits, plus 64 MiB for the rest of the dataset (overlays, private
#: tags). Deflate reaches about 1,000:1, so a 1 MB file could otherwise inflate to 1 GB.
MAX_INFLATED_BYTES = MAX_PIXELS * 2 + 64 * 1024**2
#: Deepest folder below the inbox that is walked; deeper files are skipped and counted.
MAX_FOLDER_DEPTH = 64
#: A display image whose grey levels vary less than this (standard deviation, 0..255 scale)
#: holds no picture: all black, all white or one flat grey.
MIN_DISPLAY_STD = 1.0


def checked_file_size(path: Path, max_file_bytes: int = MAX_FILE_BYTES) -> int:
    """Return the size of the regular file at ``path`` after checking it may be read.

    Raises :class:`IngestError` with ``unsafe_path`` for anything but a regular file (a
    FIFO would block the reader forever, a directory cannot be an image), ``empty_file``
    for zero bytes and ``too_large`` above ``max_file_bytes``.
    """
    try:
        status = path.stat()
    except FileNotFoundError as exc:
        raise IngestError(Reason.UNSAFE_PATH, "The file no longer exists.") from exc
    # Any other OSError (EIO, ESTALE, EACCES on a dropped share) propagates: the file is
    # not at fault, and the worker retries instead of rejecting it for good.
    if not stat.S_ISREG(status.st_mode):
        raise IngestError(Reason.UNSAFE_PATH, "The path is not a regular file.")
    if status.st_size == 0:
        raise IngestError(Reason.EMPTY_FILE, "The file is empty (0 bytes).")
    if status.st_size > max_file_bytes:
        raise IngestError(
            Reason.TOO_LARGE,
            f"The file is {status.st_size:,} bytes, over the {max_file_bytes:,} byte limit.",
        )
    return status.st_size


def check_pixel_count(
    rows: int, columns: int, samples: int = 1, frames: int = 1, max_pixels: int = MAX_PIXELS
) -> None:
    """Raise ``too_large`` when the claimed image would exceed ``max_pixels``."""
    if rows <= 0 or columns <= 0:
        raise IngestError(Reason.CORRUPT, f"The image claims {rows} rows and {columns} columns.")
    count = rows * columns * max(samples, 1) * max(frames, 1)
    if count > max_pixels:
        raise IngestError(
            Reason.TOO_LARGE,
            f"The image claims {rows} x {columns} px x {samples} samples x {frames} frames "
            f"= {count:,} values, over the {max_pixels:,} limit (decompression bomb guard).",
        )
