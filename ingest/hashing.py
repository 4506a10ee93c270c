"""The identity of a file's bytes: a streamed SHA-256."""

from __future__ import annotations

import hashlib
from pathlib import Path

#: Bytes read per step; large enough for throughput, small enough to keep memory flat.
CHUNK_BYTES = 1 << 20


def file_sha256(path: Path, chunk_bytes: int = CHUNK_BYTES) -> str:
    """Return the lowercase hex SHA-256 of the file at ``path``, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
