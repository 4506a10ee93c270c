"""Files in, display-level grey images and eligibility verdicts out.

Public API (others code against these names):

- :func:`read_header` - header-only read into :class:`ImageMetadata`;
- :func:`read_image` - full decode into a :class:`SourceImage` (float32 0..255);
- :func:`load_scorable` - header, eligibility, then pixels: the one loading path;
- :func:`ingest.eligibility.evaluate` and :class:`Eligibility`;
- :func:`file_sha256`.

Every failure is an :class:`IngestError` carrying one :class:`Reason`.
"""

from ingest.eligibility import Eligibility, evaluate
from ingest.errors import ContentChangedError, IngestError, Reason
from ingest.hashing import file_sha256
from ingest.image import ImageMetadata, Normalization, SourceImage, SourceKind
from ingest.loading import load_scorable
from ingest.readers import read_header, read_image

__all__ = [
    "ContentChangedError",
    "Eligibility",
    "ImageMetadata",
    "IngestError",
    "Normalization",
    "Reason",
    "SourceImage",
    "SourceKind",
    "evaluate",
    "file_sha256",
    "load_scorable",
    "read_header",
    "read_image",
]
