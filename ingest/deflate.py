"""Bound what a Deflated Explicit VR Little Endian file may inflate to, before pydicom does.

PS3.5 A.5: everything after the file meta group is one raw deflate stream. pydicom inflates
it in one call (``zlib.decompress``), even for a header-only read, and deflate reaches about
1,000:1: a 1 MB file became 1 GB in memory (2.2 GB peak in the watcher, issue 12). Here the
stream is inflated once in bounded steps, counting bytes and keeping none, and the file is
refused as ``too_large`` the moment the count passes :data:`ingest.limits.MAX_INFLATED_BYTES`.
Only then may pydicom inflate it, to a size now known to be bounded.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import BinaryIO

from pydicom.errors import InvalidDicomError
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.uid import DeflatedExplicitVRLittleEndian

from ingest.errors import TRUNCATED_READ_ERRORS, IngestError, Reason
from ingest.limits import MAX_INFLATED_BYTES

#: Compressed bytes read per step, and the most inflated bytes produced per step.
_READ_BYTES = 64 * 1024
_INFLATE_STEP_BYTES = 1024 * 1024


def check_deflated_size(path: Path, max_inflated_bytes: int = MAX_INFLATED_BYTES) -> int | None:
    """Return the inflated size of a deflated dataset, or None when ``path`` is not deflated.

    Raises :class:`IngestError` ``too_large`` past ``max_inflated_bytes`` (memory stays at a
    few MiB whatever the ratio) and ``corrupt`` for a broken deflate stream. Files whose
    file meta cannot be read are left to the dataset reader, which names their fault.
    """
    with path.open("rb") as stream:
        try:
            read_preamble(stream, force=True)
            meta = _read_file_meta_info(stream)
        except (InvalidDicomError, *TRUNCATED_READ_ERRORS, ValueError, KeyError, OSError):
            return None
        if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
            return None
        return _inflated_size(stream, max_inflated_bytes)


def _inflated_size(stream: BinaryIO, limit: int) -> int:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    read = stream.read
    try:
        while not inflater.eof:
            pending = read(_READ_BYTES)
            if not pending:
                break  # a stream cut short: pydicom reports it
            while pending:
                total += len(inflater.decompress(pending, _INFLATE_STEP_BYTES))
                if total > limit:
                    raise IngestError(
                        Reason.TOO_LARGE,
                        f"The deflated dataset inflates to more than {limit:,} bytes "
                        f"(the limit for one radiograph); inflating stopped there "
                        "(deflate bomb guard).",
                    )
                pending = inflater.unconsumed_tail
        total += len(inflater.flush())
    except zlib.error as exc:
        raise IngestError(
            Reason.CORRUPT, "The deflated dataset is not a valid deflate stream."
        ) from exc
    return total
