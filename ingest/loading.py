"""The one way to get a scorable image: used by the worker pipeline and ``cxr-triage predict``.

Header, then eligibility, then pixels: an ineligible file is rejected before a single
pixel is decoded, so a CT series or a dose report on the share costs a header read.
"""

from __future__ import annotations

from pathlib import Path

from ingest.eligibility import Eligibility, evaluate
from ingest.errors import ContentChangedError, IngestError
from ingest.image import SourceImage
from ingest.readers import decode, read_header


def load_scorable(
    path: Path, expected_sha256: str | None = None, min_side: int | None = None
) -> tuple[SourceImage, Eligibility]:
    """Return the decoded image and its (eligible) verdict with flags.

    ``min_side`` (twice the model's input for scoring) lets the reader decode at a reduced
    resolution (:mod:`ingest.reduced`); None decodes full resolution.

    Raises :class:`IngestError` with the first rejection reason when the header makes
    the file ineligible, or with the reader's reason when it cannot be decoded; and
    :class:`ContentChangedError` when ``expected_sha256`` is given and the file's content
    no longer matches it.
    """
    metadata = read_header(path)
    if expected_sha256 is not None and metadata.file_sha256 != expected_sha256:
        raise ContentChangedError(
            f"content hash {metadata.file_sha256[:12]} is not the one received"
        )
    verdict = evaluate(metadata)
    if not verdict.eligible:
        raise IngestError(verdict.reasons[0], verdict.messages[0])
    image = decode(path, metadata, min_side)
    flags = verdict.flags
    if image.normalization.steps and any(s.startswith("color:") for s in image.normalization.steps):
        flags = tuple(dict.fromkeys((*flags, "color_converted")))
    return image, Eligibility(eligible=True, flags=flags)
