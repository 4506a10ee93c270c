"""What the receiver checks in a complete object before it answers Success, reading only
bounded parts of it.

The checks are ingest's (its reasons, its limits), applied as the worker will apply them,
so that a sender hears at once what would otherwise only show on the worklist:

1. the header, everything before (7FE0,0010) Pixel Data, read by pydicom from at most
   :data:`MAX_HEADER_BYTES` of the data set, with values over :data:`DEFER_BYTES` left
   unread. A deflated data set is first measured by inflating it in bounded steps
   (:func:`ingest.deflate.check_deflated_size`: a bomb is refused as ``too_large`` without
   being held), then only its first :data:`MAX_HEADER_BYTES` are inflated, into a file.
   Memory therefore stays within a few MiB per check whatever the object, and
   :data:`CHECKS_AT_ONCE` checks run at a time;
2. the data set's (0008,0016)/(0008,0018) against the command's Affected SOP Class and
   Instance UIDs (PS3.4 B.2.3: ``0xA900`` when they differ; the file would otherwise be
   named, and routed, by an identity its content does not carry);
3. eligibility (:func:`ingest.eligibility.evaluate`): a lateral view, another body part...;
4. the pixels, from their header and their first bytes: one frame, a supported photometric
   interpretation, Rows x Columns x Samples within :data:`ingest.limits.MAX_PIXELS`, a
   native Pixel Data as long as the image it claims, and for a compressed one the
   codestream's own frame header within the limit and agreeing with the DICOM header
   (:func:`ingest.dicom.check_frame_header`): the decompression bombs ingest refuses.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.pixels.utils import get_expected_length
from pydicom.tag import BaseTag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from ingest.deflate import check_deflated_size
from ingest.dicom import LIBRARY_ERRORS, check_frame_header, check_geometry
from ingest.eligibility import evaluate
from ingest.errors import IngestError, Reason
from ingest.greylevels import is_supported_photometric, photometric_interpretation
from ingest.image import ImageMetadata
from ingest.limits import MAX_PIXELS
from ingest.metadata import dicom_metadata

#: Most bytes of data set before Pixel Data that are parsed (a radiograph's header is a few
#: kB; vendors' private blocks reach a few MB).
MAX_HEADER_BYTES = 64 * 1024 * 1024
#: Values longer than this are skipped, not read (overlays, private blobs, icon images at
#: top level); an attribute the checks need that long is refused as corrupt.
DEFER_BYTES = 256 * 1024
#: Bytes of the first compressed frame read for its frame header (SOF / SIZ).
FRAME_HEAD_BYTES = 64 * 1024
#: Checks that may run at once (each holds at most a header in memory).
CHECKS_AT_ONCE = 2

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # PS3.4 B.2.3 Refused: Out of Resources
DATA_SET_MISMATCH = 0xA900  # Error: Data Set does not match SOP Class
CANNOT_UNDERSTAND = 0xC000  # Error: Cannot understand

_PIXEL_DATA = 0x7FE00010
_FLOAT_PIXEL_DATA = frozenset({0x7FE00008, 0x7FE00009})
_ITEM = 0xFFFEE000
_SEQUENCE_DELIMITER = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF


@dataclass(frozen=True)
class Refusal:
    """A C-STORE failure status and its Error Comment (a reason code; no patient data)."""

    status: int
    comment: str


@dataclass(frozen=True)
class ReceivedObject:
    """Where the data set lies in the received file and what the association said of it."""

    path: Path
    dataset_offset: int  # after preamble and file meta
    transfer_syntax: UID
    sha256: str
    affected_sop_class_uid: str
    affected_sop_instance_uid: str
    work_folder: Path  # where a deflated header may be inflated to (private, same disk)


def check_object(received: ReceivedObject) -> ImageMetadata | Refusal:
    """The object's metadata when ingest would accept it; otherwise why not."""
    head = received.work_folder / f"{received.path.name}.inflated"
    try:
        return _check(received, head)
    finally:
        head.unlink(missing_ok=True)


def _check(received: ReceivedObject, head: Path) -> ImageMetadata | Refusal:
    try:
        header = _read_header(received, head)
    except IngestError as error:
        return Refusal(CANNOT_UNDERSTAND, f"not accepted: {error.reason.value}")
    ds = header.dataset
    try:
        metadata = dicom_metadata(ds, received.path, received.sha256, str(received.transfer_syntax))
    except IngestError as error:
        return Refusal(CANNOT_UNDERSTAND, f"not accepted: {error.reason.value}")
    except (*LIBRARY_ERRORS, OSError):  # a deferred (over-long) attribute, a broken value
        return Refusal(CANNOT_UNDERSTAND, f"not accepted: {Reason.CORRUPT.value}")
    mismatch = _identity_mismatch(metadata, received)
    if mismatch:
        return Refusal(DATA_SET_MISMATCH, mismatch)
    verdict = evaluate(metadata)
    if not verdict.eligible:
        reasons = dict.fromkeys(reason.value for reason in verdict.reasons)
        return Refusal(CANNOT_UNDERSTAND, "not eligible: " + ",".join(reasons))
    try:
        _check_pixels(header, received)
    except IngestError as error:
        return Refusal(CANNOT_UNDERSTAND, f"not accepted: {error.reason.value}")
    except (*LIBRARY_ERRORS, struct.error):
        return Refusal(CANNOT_UNDERSTAND, f"not accepted: {Reason.CORRUPT.value}")
    return metadata


def _identity_mismatch(metadata: ImageMetadata, received: ReceivedObject) -> str | None:
    if (metadata.sop_instance_uid or "") != _uid_text(received.affected_sop_instance_uid):
        return "SOP Instance UID in the data set differs from the command's"
    if (metadata.sop_class_uid or "") != _uid_text(received.affected_sop_class_uid):
        return "SOP Class UID in the data set differs from the command's"
    return None


def _uid_text(value: str) -> str:
    return str(value or "").strip("\0 ")


@dataclass(frozen=True)
class _Header:
    dataset: Dataset
    stream: Path  # the file the data set was parsed from (the part, or its inflated head)
    stream_offset: int  # where the data set starts in it
    stop_tag: int | None  # the pixel element reading stopped at
    stop_length: int
    pixel_value_offset: int  # in ``stream``
    dataset_end: int  # the data set's length, from ``stream_offset`` (inflated for deflate)


def _read_header(received: ReceivedObject, head: Path) -> _Header:
    """Parse the header; a deflated data set's is parsed from ``head``, its first bytes
    inflated (the caller removes it)."""
    syntax = received.transfer_syntax
    if syntax == DeflatedExplicitVRLittleEndian:
        inflated_size = check_deflated_size(received.path)
        if inflated_size is None:
            raise IngestError(Reason.CORRUPT, "The deflated data set cannot be read.")
        _inflate_head(received.path, received.dataset_offset, head)
        return _parse(head, 0, syntax, inflated_size)
    size = received.path.stat().st_size - received.dataset_offset
    return _parse(received.path, received.dataset_offset, syntax, size)


def _inflate_head(path: Path, offset: int, head: Path) -> None:
    """The first :data:`MAX_HEADER_BYTES` (+ a frame head) of a deflated data set, into
    ``head``, in bounded steps (the whole was measured by ``check_deflated_size``)."""
    limit = MAX_HEADER_BYTES + FRAME_HEAD_BYTES + 64
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    written = 0
    with path.open("rb") as source, head.open("xb") as target:
        source.seek(offset)
        while written < limit and not inflater.eof:
            pending = source.read(64 * 1024)
            if not pending:
                break
            while pending and written < limit:
                chunk = inflater.decompress(pending, min(1024 * 1024, limit - written))
                target.write(chunk)
                written += len(chunk)
                pending = inflater.unconsumed_tail


def _parse(stream_path: Path, offset: int, syntax: UID, dataset_end: int) -> _Header:
    stop: list[tuple[int, int]] = []

    def at_pixels(tag: BaseTag, vr: str | None, length: int) -> bool:
        if tag == _PIXEL_DATA or tag in _FLOAT_PIXEL_DATA or tag > _PIXEL_DATA:
            stop.append((int(tag), length))
            return True
        return False

    with stream_path.open("rb") as raw:
        raw.seek(offset)
        capped = _CappedReader(raw, offset, MAX_HEADER_BYTES)
        try:
            ds = read_dataset(
                capped,  # type: ignore[arg-type]
                syntax.is_implicit_VR,
                syntax.is_little_endian,
                stop_when=at_pixels,
                defer_size=DEFER_BYTES,
            )
        except _ReadFailureError as failure:
            raise failure.error from None
        except (*LIBRARY_ERRORS, EOFError, OSError, MemoryError) as error:
            if capped.hit_cap:
                raise _header_too_large() from error
            raise IngestError(Reason.CORRUPT, "The DICOM data set cannot be parsed.") from error
        if not stop and capped.hit_cap:
            raise _header_too_large()
        element_start = raw.tell()
    if len(ds) == 0:
        raise IngestError(Reason.TRUNCATED, "The data set ends before its first element.")
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    stop_tag, stop_length = stop[0] if stop else (None, 0)
    header_bytes = 8 if syntax.is_implicit_VR else 12  # Pixel Data is OB/OW: long form
    return _Header(
        dataset=ds,
        stream=stream_path,
        stream_offset=offset,
        stop_tag=stop_tag,
        stop_length=stop_length,
        pixel_value_offset=element_start + header_bytes,
        dataset_end=dataset_end,
    )


def _header_too_large() -> IngestError:
    return IngestError(
        Reason.TOO_LARGE,
        f"The data set's header (before Pixel Data) is over {MAX_HEADER_BYTES:,} bytes.",
    )


def _check_pixels(header: _Header, received: ReceivedObject) -> None:
    """Ingest's :func:`ingest.dicom.check_decodable`, from the header and the first bytes of
    Pixel Data only (the transfer syntax was negotiated among those ingest decodes)."""
    ds = header.dataset
    if header.stop_tag is None or header.stop_tag > _PIXEL_DATA:
        raise IngestError(Reason.NO_PIXEL_DATA, "The dataset has no (7FE0,0010) Pixel Data.")
    if header.stop_tag != _PIXEL_DATA:
        raise IngestError(
            Reason.UNSUPPORTED_PHOTOMETRIC,
            "Float or Double Float Pixel Data (parametric maps) is not a radiograph.",
        )
    photometric = photometric_interpretation(ds)
    if not is_supported_photometric(photometric):
        raise IngestError(
            Reason.UNSUPPORTED_PHOTOMETRIC,
            f"(0028,0004) Photometric Interpretation '{photometric}' is not supported.",
        )
    rows, columns, samples = check_geometry(ds, MAX_PIXELS)
    value_start = header.pixel_value_offset - header.stream_offset
    syntax = received.transfer_syntax
    if syntax.is_encapsulated:
        if header.stop_length != _UNDEFINED:
            raise IngestError(
                Reason.CORRUPT, "Compressed (7FE0,0010) Pixel Data is not encapsulated."
            )
        first = _first_fragment_head(header)
        check_frame_header(first, rows, columns, samples, MAX_PIXELS)
        return
    if header.stop_length == _UNDEFINED:
        raise IngestError(Reason.CORRUPT, "Native (7FE0,0010) Pixel Data has an undefined length.")
    expected = get_expected_length(ds, "bytes")
    if header.stop_length < expected:
        raise IngestError(
            Reason.TRUNCATED,
            f"(7FE0,0010) Pixel Data holds {header.stop_length:,} bytes; "
            f"the image needs {expected:,}.",
        )
    if value_start + header.stop_length > header.dataset_end:
        raise IngestError(Reason.TRUNCATED, "The object ends inside (7FE0,0010) Pixel Data.")


def _first_fragment_head(header: _Header) -> bytes:
    """The first :data:`FRAME_HEAD_BYTES` of the first fragment: after the Basic Offset
    Table item (PS3.5 A.4), the first item of the encapsulated Pixel Data."""
    little = "<"  # encapsulated transfer syntaxes are all little endian
    with header.stream.open("rb") as stream:
        stream.seek(header.pixel_value_offset)
        for index in range(2):
            tag, length = _item_header(stream, little)
            if tag == _SEQUENCE_DELIMITER:
                raise IngestError(Reason.CORRUPT, "The encapsulated Pixel Data has no frame.")
            if tag != _ITEM or length == _UNDEFINED:
                raise IngestError(
                    Reason.CORRUPT, "The encapsulated Pixel Data's items are malformed."
                )
            if index == 0:  # the Basic Offset Table: skip it
                if length > header.dataset_end:
                    raise IngestError(Reason.CORRUPT, "The Basic Offset Table is too long.")
                stream.seek(length, os.SEEK_CUR)
                continue
            return stream.read(min(length, FRAME_HEAD_BYTES))
    raise AssertionError("unreachable")


def _item_header(stream: BinaryIO, endian: str) -> tuple[int, int]:
    data = stream.read(8)
    if len(data) < 8:
        raise IngestError(Reason.TRUNCATED, "The object ends inside (7FE0,0010) Pixel Data.")
    group, element, length = struct.unpack(f"{endian}HHL", data)
    return (group << 16) | element, length


class _ReadFailureError(Exception):
    """The underlying file could not be read (a disk error): not the object's fault."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class _CappedReader:
    """A file seen as ending ``limit`` bytes after ``start``: pydicom parses at most that
    much of a header; ``hit_cap`` tells a header cut by the cap from one that ended."""

    def __init__(self, raw: BinaryIO, start: int, limit: int) -> None:
        self._raw = raw
        self._end = start + limit
        self.hit_cap = False
        self.name = "<received object>"

    def read(self, size: int = -1) -> bytes:
        allowed = max(0, self._end - self._raw.tell())
        if size is None or size < 0:
            size = allowed
        elif size > allowed:
            self.hit_cap = True
            size = allowed
        try:
            return self._raw.read(size)
        except OSError as error:
            raise _ReadFailureError(error) from error

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()
