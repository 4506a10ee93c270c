"""Named reasons a file is not scored, and the one exception that carries them.

Every failure to read or accept a file ends as exactly one :class:`Reason`; the worker
stores the reason's value in the worklist row and files the original under
``quarantine/<reason>/``. Nothing that a hostile or broken file can do should surface as
any other exception type.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a file was rejected or failed. Values are stable: they are stored in the DB."""

    # -- cannot be read at all
    EMPTY_FILE = "empty_file"
    NOT_AN_IMAGE = "not_an_image"  # neither DICOM nor a raster format we read
    NOT_DICOM = "not_dicom"  # named .dcm (or claims DICM) but is not parseable DICOM
    TRUNCATED = "truncated"
    CORRUPT = "corrupt"
    TOO_LARGE = "too_large"  # file size, pixel count or claimed element length over a bound
    UNSUPPORTED_TRANSFER_SYNTAX = "unsupported_transfer_syntax"
    MISSING_CODEC = "missing_codec"
    UNSUPPORTED_PHOTOMETRIC = "unsupported_photometric"
    MULTI_FRAME = "multi_frame"
    NO_PIXEL_DATA = "no_pixel_data"
    BLANK_IMAGE = "blank_image"  # no picture: non-finite or constant values, no contrast
    UNSAFE_PATH = "unsafe_path"  # symlink out of the inbox, not a regular file
    # -- readable, but not something the model may score
    WRONG_SOP_CLASS = "wrong_sop_class"
    WRONG_MODALITY = "wrong_modality"
    DX_FOR_PROCESSING = "dx_for_processing"
    NOT_CHEST = "not_chest"
    LATERAL_VIEW = "lateral_view"
    NON_FRONTAL_VIEW = "non_frontal_view"  # oblique or decubitus: neither PA/AP nor lateral
    # -- decided from the pixels by the model's content check (model.content_check)
    NOT_CHEST_RADIOGRAPH = "not_chest_radiograph"
    # -- infrastructure, set by the worker, never by ingest
    PROCESSING_ERROR = "processing_error"
    TOO_MANY_ATTEMPTS = "too_many_attempts"  # claimed max_attempts times, never finished


class IngestError(Exception):
    """A file could not be turned into a scorable image, for one named :class:`Reason`.

    ``str(err)`` is a sentence for a human (a PACS administrator reading the quarantine
    sidecar); it must never contain patient-identifying values.
    """

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __reduce__(self) -> tuple[type[IngestError], tuple[Reason, str]]:
        # Keep the reason when the error crosses a process boundary (Celery, pickling).
        return (type(self), (self.reason, self.message))


class ContentChangedError(Exception):
    """The file no longer holds the bytes it was received with (a sender overwrote it).

    Not a property of the file's content, so not a :class:`Reason`: the new content is a new
    arrival, and whoever held the old one must not score it under the old identity.
    """
