"""Named reasons a file is not scored, and the one exception that carries them.

Every failure to read or accept a file ends as exactly one :class:`Reason`; the worker
stores the reason's value in the worklist row and files the original under
``quarantine/<reason>/``. Nothing that a hostile or broken file can do should surface as
any other exception type.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType


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
    # -- decided from the pixels by the model's content check (model.content_check), and
    #    for the population with the header's age (worker.population)
    NOT_CHEST_RADIOGRAPH = "not_chest_radiograph"
    #: A chest radiograph, but of a patient outside the population the model was trained
    #: on (an adult by the header's age): not analysed.
    OUTSIDE_TRAINING_POPULATION = "outside_training_population"
    # -- infrastructure, set by the worker, never by ingest
    PROCESSING_ERROR = "processing_error"
    TOO_MANY_ATTEMPTS = "too_many_attempts"  # claimed max_attempts times, never finished


#: Why an image was not analysed, in words a reader (or a "not analysed" report to the PACS)
#: can show as they are: no patient data, no jargon, what to do.
NOT_ANALYSED_IN_WORDS: dict[Reason, str] = {
    Reason.NOT_CHEST_RADIOGRAPH: (
        "Not analysed: the image does not look like a frontal chest radiograph. "
        "Check what was sent."
    ),
    Reason.OUTSIDE_TRAINING_POPULATION: (
        "Not analysed: a chest radiograph of a patient outside the population the model "
        "was trained on (children aged 1 to 5 years). Read it without the model's help."
    ),
}


_READ_IN_PACS = "Read it in PACS without the model's help."
_CHECK_SENDER = "Check what the modality or PACS sent."

#: Every reason a file was not scored, in words a reader can act on (the review page shows
#: them for every unscored row). The two content-check reasons are
#: :data:`NOT_ANALYSED_IN_WORDS`'s; every other reason of the image is "not analysed" too
#: (unknown risk: read with SUSPECT); a file that is not the device's to read says so.
#: Total over :class:`Reason` (``tests/ingest/test_errors.py``); no patient data, no jargon.
REASON_IN_WORDS: Mapping[Reason, str] = MappingProxyType(
    {
        **NOT_ANALYSED_IN_WORDS,
        Reason.EMPTY_FILE: f"Not analysed: the file arrived empty. {_CHECK_SENDER}",
        Reason.NOT_AN_IMAGE: f"Not analysed: the file is not an image. {_CHECK_SENDER}",
        Reason.NOT_DICOM: (
            f"Not analysed: the file claims to be DICOM but cannot be read as DICOM. "
            f"{_CHECK_SENDER}"
        ),
        Reason.TRUNCATED: (
            f"Not analysed: the file is cut short (an interrupted transfer?). {_CHECK_SENDER}"
        ),
        Reason.CORRUPT: f"Not analysed: the file is damaged and cannot be decoded. {_READ_IN_PACS}",
        Reason.TOO_LARGE: (
            f"Not analysed: the file or image is larger than the device accepts. {_READ_IN_PACS}"
        ),
        Reason.UNSUPPORTED_TRANSFER_SYNTAX: (
            f"Not analysed: the image is compressed in a way the device cannot decode. "
            f"{_READ_IN_PACS}"
        ),
        Reason.MISSING_CODEC: (
            f"Not analysed: the decoder for this image's compression is not installed. "
            f"{_READ_IN_PACS}"
        ),
        Reason.UNSUPPORTED_PHOTOMETRIC: (
            f"Not analysed: the image's colour encoding is not one the device reads. "
            f"{_READ_IN_PACS}"
        ),
        Reason.MULTI_FRAME: (
            f"Not analysed: the object holds several frames; the device reads single films. "
            f"{_READ_IN_PACS}"
        ),
        Reason.NO_PIXEL_DATA: f"Not analysed: the object holds no image. {_CHECK_SENDER}",
        Reason.BLANK_IMAGE: (
            f"Not analysed: the image is blank (no contrast to read). {_CHECK_SENDER}"
        ),
        Reason.UNSAFE_PATH: (
            "Not analysed: the file was not a plain file in the inbox (a link or a special "
            "file) and was set aside unread. Ask the PACS administrator."
        ),
        Reason.PROCESSING_ERROR: (
            f"Not analysed: the device failed while scoring this image; it says nothing about "
            f"the film. {_READ_IN_PACS}"
        ),
        Reason.TOO_MANY_ATTEMPTS: (
            f"Not analysed: scoring was tried several times and never finished; it says "
            f"nothing about the film. {_READ_IN_PACS}"
        ),
        Reason.WRONG_SOP_CLASS: (
            "Not the device's to read: the object is not a radiograph (a report, a "
            "presentation state or another kind of image)."
        ),
        Reason.WRONG_MODALITY: (
            "Not the device's to read: the image is from another modality (CT, MR, ultrasound...)."
        ),
        Reason.DX_FOR_PROCESSING: (
            "Not the device's to read: the raw 'for processing' version of a film; its "
            "'for presentation' version is the one read."
        ),
        Reason.NOT_CHEST: "Not the device's to read: the header names another body part.",
        Reason.LATERAL_VIEW: (
            "Not the device's to read: a lateral view; it belongs with its study's frontal film."
        ),
        Reason.NON_FRONTAL_VIEW: (
            "Not the device's to read: an oblique or decubitus view (neither PA/AP nor lateral)."
        ),
    }
)

#: What an unscored row says when its stored reason is not one this version knows.
UNKNOWN_REASON_IN_WORDS = (
    f"Not analysed, for a reason this version does not know; it is read with SUSPECT. "
    f"{_READ_IN_PACS}"
)


def reason_in_words(reason: str | None) -> str:
    """The sentence for a stored ``worklist.reason`` value (any value, even an unknown one)."""
    try:
        return REASON_IN_WORDS[Reason(reason or "")]
    except ValueError:
        return UNKNOWN_REASON_IN_WORDS


class Disposition(StrEnum):
    """What a file that was not scored means for the reading list (``db.reading`` places it).

    The line is drawn by evidence, not by convenience: a file is *not the device's to read*
    only when a header that could be read says so (a CT, a lateral view, a hand, an object
    that is not an image, the raw "for processing" version of a film). Everything else that
    went unscored might be a child's frontal chest film that the device failed to analyse,
    and unknown risk is not low risk: it is read with the SUSPECT tier, in arrival order,
    where it would have been read without the device (passive notification, BRIEF.md 7b).
    """

    UNKNOWN_RISK = "unknown_risk"  # read in the middle tier, with SUSPECT
    NOT_FOR_DEVICE = "not_for_device"  # listed apart, never in the reading order


_UNKNOWN, _NOT_FOR_DEVICE = Disposition.UNKNOWN_RISK, Disposition.NOT_FOR_DEVICE

#: Every reason's disposition, keyed by the value stored in ``worklist.reason``. Total over
#: :class:`Reason` (``tests/ingest/test_errors.py`` fails on a reason left out); a value
#: the table does not know (written by another version) is read as unknown risk.
DISPOSITIONS: Mapping[str, Disposition] = MappingProxyType(
    {
        # could not be read: nothing says what the file is, so it may be a chest film
        Reason.EMPTY_FILE: _UNKNOWN,
        Reason.NOT_AN_IMAGE: _UNKNOWN,
        Reason.NOT_DICOM: _UNKNOWN,
        Reason.TRUNCATED: _UNKNOWN,
        Reason.CORRUPT: _UNKNOWN,
        Reason.TOO_LARGE: _UNKNOWN,
        Reason.UNSUPPORTED_TRANSFER_SYNTAX: _UNKNOWN,
        Reason.MISSING_CODEC: _UNKNOWN,
        Reason.UNSUPPORTED_PHOTOMETRIC: _UNKNOWN,
        Reason.MULTI_FRAME: _UNKNOWN,
        Reason.NO_PIXEL_DATA: _UNKNOWN,
        Reason.BLANK_IMAGE: _UNKNOWN,
        Reason.UNSAFE_PATH: _UNKNOWN,
        # a readable header says the device does not read it
        Reason.WRONG_SOP_CLASS: _NOT_FOR_DEVICE,
        Reason.WRONG_MODALITY: _NOT_FOR_DEVICE,
        Reason.DX_FOR_PROCESSING: _NOT_FOR_DEVICE,
        Reason.NOT_CHEST: _NOT_FOR_DEVICE,
        Reason.LATERAL_VIEW: _NOT_FOR_DEVICE,
        Reason.NON_FRONTAL_VIEW: _NOT_FOR_DEVICE,
        # the pixels, judged by the model's content check: a real child's film can fail it
        Reason.NOT_CHEST_RADIOGRAPH: _UNKNOWN,
        Reason.OUTSIDE_TRAINING_POPULATION: _UNKNOWN,  # a chest film outside the population
        # the device failed: says nothing about the film
        Reason.PROCESSING_ERROR: _UNKNOWN,
        Reason.TOO_MANY_ATTEMPTS: _UNKNOWN,
    }
)

#: The stored reason values whose files are listed apart (the database's copy of this rule
#: is ``db.reading.READING_TIER``, checked against this set by ``tests/db/test_reading.py``).
NOT_FOR_DEVICE_REASONS = frozenset(
    str(reason) for reason, disposition in DISPOSITIONS.items() if disposition is _NOT_FOR_DEVICE
)


def disposition(reason: str | None) -> Disposition:
    """How the reading list treats a file left unscored for ``reason`` (a stored value)."""
    return DISPOSITIONS.get(reason or "", Disposition.UNKNOWN_RISK)


#: What pydicom raises when a file ends inside an element's header or value.
TRUNCATED_READ_ERRORS = (EOFError, struct.error)
#: Errors that pydicom and its plugins raise on broken input; each becomes a Reason.
LIBRARY_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    LookupError,
    OverflowError,
    NotImplementedError,
    RuntimeError,
    UnicodeError,
    zlib.error,
    struct.error,
)


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
