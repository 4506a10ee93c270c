"""Which unscored films the PACS hears about, and the words it is told (issue 19, part 4).

A film the header makes **the device's to read** (a CR or DX image for presentation, chest or
no body part, frontal or no view position: :func:`is_device_to_read`) that was not scored gets
a "not analysed" SR in its study, so a reader looking at the study in the PACS can tell
"analysed, routine" from "never analysed". A file that is not the device's to read (a CT, a
lateral, a hand, DX for processing) gets nothing: the device makes no claim about it.

The test is on what the header says, through :mod:`ingest.eligibility`'s own identity rules,
never on how a reason is classified elsewhere: a film refused by the content check, outside
the training population, blank, undecodable, failed or tried too often is the device's to
read exactly when its header is that of a frontal chest radiograph. The header is re-read
from the original as filed (quarantine), header only, with ingest's hardened reader.

The words are :data:`ingest.errors.REASON_IN_WORDS`, the one table of what each reason means
to a reader, shared with the review page.
"""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset

from ingest.dicom import read_dataset_header, transfer_syntax
from ingest.eligibility import (
    check_body_part,
    check_modality,
    check_presentation_intent,
    check_sop_class,
    check_view_position,
    evaluate,
)
from ingest.errors import IngestError, Reason, reason_in_words
from ingest.image import ImageMetadata, SourceKind
from ingest.metadata import dicom_metadata
from ingest.sniff import sniff
from pacs.source import SourceHeaderError, reference_dataset

#: The eligibility rules about *what* the image is (SOP Class, modality, presentation
#: intent, body part, view), not about whether its pixels can be read.
IDENTITY_RULES = (
    check_sop_class,
    check_modality,
    check_presentation_intent,
    check_body_part,
    check_view_position,
)
#: Reasons that by themselves say the file is not the device's to read (or has no header
#: to read a study from): no SR, and no need to open the file.
NOT_THE_DEVICES = frozenset(
    {
        Reason.WRONG_SOP_CLASS,
        Reason.WRONG_MODALITY,
        Reason.DX_FOR_PROCESSING,
        Reason.NOT_CHEST,
        Reason.LATERAL_VIEW,
        Reason.NON_FRONTAL_VIEW,
        Reason.EMPTY_FILE,
        Reason.NOT_AN_IMAGE,
        Reason.NOT_DICOM,
        Reason.UNSAFE_PATH,
    }
)

AFTERWORD = "Every case is still read by a radiologist; this is not a finding."


def words_for(reason: str | None) -> str:
    """The sentences an SR gives for ``reason`` (the stored value), code included: the
    review page's own words (:func:`ingest.errors.reason_in_words`), so the PACS and the
    page never explain one film two ways."""
    return f"{reason_in_words(reason)} (reason code {reason or 'unknown'}). {AFTERWORD}"


def may_be_the_devices(reason: str | None) -> bool:
    """False when the stored reason alone rules the file out (no header read needed)."""
    return reason not in NOT_THE_DEVICES


def is_device_to_read(metadata: ImageMetadata) -> bool:
    """Whether the header makes this file one the device is meant to read: a DICOM that
    passes the identity rules (CR/DX for presentation, chest, frontal; an absent body part or
    view position is accepted, as for scoring)."""
    if metadata.kind is not SourceKind.DICOM:
        return False
    return evaluate(metadata, IDENTITY_RULES).eligible


def device_source(path: Path) -> Dataset | None:
    """The reference dataset (:func:`pacs.source.reference_dataset`) of the filed original
    when its header makes it the device's to read; ``None`` when it is not, or its header
    cannot be read. Raises :class:`SourceHeaderError` for a film that is the device's but
    whose UIDs cannot be referenced, and :class:`OSError` when the file cannot be opened."""
    try:
        sniffed = sniff(path)
        if sniffed.kind is not SourceKind.DICOM:
            return None
        header = read_dataset_header(path, sniffed)
        syntax = transfer_syntax(header)
        # the content hash is not needed to judge the header: a placeholder of its length
        metadata = dicom_metadata(header, path, "0" * 64, str(syntax) if syntax else None)
    except (IngestError, ValueError):
        return None
    if not is_device_to_read(metadata):
        return None
    return reference_dataset(header)


__all__ = [
    "SourceHeaderError",
    "device_source",
    "is_device_to_read",
    "may_be_the_devices",
    "words_for",
]
