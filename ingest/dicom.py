"""DICOM in, checked dataset and decoded first frame out, every failure a named reason.

Reading happens in two passes, as a PACS router does: :func:`read_dataset_header` stops
before (7FE0,0010) Pixel Data so eligibility is decided cheaply; :func:`read_dataset` and
:func:`decode_frame` then decode with pydicom 3's pixel backend and the codec plugins the
project installs (pylibjpeg with -libjpeg, -openjpeg and -rle; pyjpegls where present).

Frame rule: a chest radiograph is one frame. (0028,0008) Number of Frames absent, 0 or 1
means one frame and that frame is read; more than one frame is rejected as
``multi_frame``, because choosing one frame of a cine, tomosynthesis or stack would be a
guess the model was never trained for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder
from pydicom.pixels import pixel_array as decode_pixel_array
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import (
    UID,
    AllTransferSyntaxes,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from ingest.codestream import CodestreamError, TruncatedCodestreamError, is_jp2, read_frame_header
from ingest.deflate import check_deflated_size
from ingest.errors import LIBRARY_ERRORS, TRUNCATED_READ_ERRORS, IngestError, Reason
from ingest.limits import MAX_FILE_BYTES, MAX_PIXELS, check_pixel_count, checked_file_size
from ingest.sniff import Sniffed

PIXEL_DATA_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # Pixel Data, Float, Double Float
_UNDEFINED_LENGTH = 0xFFFFFFFF
_UNCOMPRESSED = frozenset(
    {
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
    }
)


def read_dataset_header(
    path: Path, sniffed: Sniffed, max_file_bytes: int = MAX_FILE_BYTES
) -> Dataset:
    """Read every element before (7FE0,0010) Pixel Data; no pixel is decoded."""
    return _read(path, sniffed, stop_before_pixels=True, max_file_bytes=max_file_bytes)


def read_dataset(path: Path, sniffed: Sniffed, max_file_bytes: int = MAX_FILE_BYTES) -> Dataset:
    """Read the whole dataset, Pixel Data included, and check its lengths against the file."""
    return _read(path, sniffed, stop_before_pixels=False, max_file_bytes=max_file_bytes)


def _read(
    path: Path, sniffed: Sniffed, *, stop_before_pixels: bool, max_file_bytes: int
) -> Dataset:
    file_size = checked_file_size(path, max_file_bytes)
    check_deflated_size(path)  # pydicom inflates in one call: bound it before it does
    try:
        # force=True only for a raw dataset whose first element sniff.py found plausible.
        ds = dcmread(path, stop_before_pixels=stop_before_pixels, force=not sniffed.has_preamble)
    except InvalidDicomError as exc:
        raise IngestError(Reason.NOT_DICOM, "The file is not a parseable DICOM dataset.") from exc
    except TRUNCATED_READ_ERRORS as exc:
        raise IngestError(Reason.TRUNCATED, "The file ends inside the DICOM header.") from exc
    except MemoryError as exc:
        raise IngestError(Reason.TOO_LARGE, "The DICOM header does not fit in memory.") from exc
    except LIBRARY_ERRORS as exc:
        raise IngestError(
            Reason.CORRUPT, f"The DICOM dataset cannot be parsed ({type(exc).__name__})."
        ) from exc
    if len(ds) == 0:
        # pydicom drops every element when the file ends inside one (it warns instead of
        # raising), so a DICOM file whose dataset reads as empty was cut short.
        raise IngestError(
            Reason.TRUNCATED, "The file ends before its first complete DICOM data element."
        )
    ensure_transfer_syntax(ds)
    if transfer_syntax(ds) != DeflatedExplicitVRLittleEndian:
        # A deflated dataset's element offsets count inflated bytes, not file bytes.
        check_element_lengths(ds, file_size)
    return ds


def check_element_lengths(ds: Dataset, file_size: int) -> None:
    """Reject elements whose declared length runs past the end of the file.

    pydicom reads a short value without complaint; a value cut by the end of the file is a
    truncated transfer, a length beyond any file we accept is a hostile one.
    """
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        if not isinstance(raw, RawDataElement) or raw.length == _UNDEFINED_LENGTH:
            continue
        if raw.length > MAX_FILE_BYTES:
            raise IngestError(
                Reason.TOO_LARGE,
                f"Element {tag} declares {raw.length:,} bytes, more than any accepted file.",
            )
        if raw.value_tell + raw.length > file_size:
            missing = raw.value_tell + raw.length - file_size
            raise IngestError(
                Reason.TRUNCATED,
                f"The file ends {missing:,} bytes before the end of element {tag}.",
            )


def ensure_transfer_syntax(ds: Dataset) -> None:
    """Give a raw dataset (no file meta) the transfer syntax it was actually read with."""
    if not hasattr(ds, "file_meta"):
        ds.file_meta = FileMetaDataset()
    if ds.file_meta.get("TransferSyntaxUID"):
        return
    implicit_vr, little_endian = ds.original_encoding
    if implicit_vr is None or little_endian is None:
        return
    if implicit_vr:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        ds.file_meta.TransferSyntaxUID = (
            ExplicitVRLittleEndian if little_endian else ExplicitVRBigEndian
        )


def transfer_syntax(ds: Dataset) -> UID | None:
    """(0002,0010) Transfer Syntax UID, or None when it is absent."""
    value = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    return UID(str(value)) if value else None


def number_of_frames(ds: Dataset) -> int:
    """(0028,0008) Number of Frames; absent, empty or 0 means one frame (PS3.3 C.7.6.6)."""
    value = ds.get("NumberOfFrames")
    try:
        frames = int(value) if value not in (None, "") else 1
    except (TypeError, ValueError) as exc:
        raise IngestError(
            Reason.CORRUPT, f"(0028,0008) Number of Frames '{value}' is not a number."
        ) from exc
    return max(frames, 1)


def check_geometry(ds: Dataset, max_pixels: int = MAX_PIXELS) -> tuple[int, int, int]:
    """``(rows, columns, samples)`` of a one-frame image within ``max_pixels``: the frame
    rule and the pixel-count bound, from the header alone. One rule for the file that
    arrives in the share and the object the receiver is still reading."""
    frames = number_of_frames(ds)
    if frames > 1:
        raise IngestError(
            Reason.MULTI_FRAME,
            f"(0028,0008) Number of Frames is {frames}; a radiograph is one frame.",
        )
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    except (AttributeError, TypeError, ValueError) as exc:
        raise IngestError(
            Reason.CORRUPT, "(0028,0010) Rows or (0028,0011) Columns is missing or invalid."
        ) from exc
    check_pixel_count(rows, columns, samples, frames, max_pixels)
    return rows, columns, samples


def check_decodable(ds: Dataset, max_pixels: int = MAX_PIXELS) -> None:
    """Check, from the header alone, that the pixels can and may be decoded.

    Order: pixel data present, a transfer syntax pydicom knows, a codec installed for it,
    the frame rule, then the pixel-count bound.
    """
    if not any(tag in ds for tag in PIXEL_DATA_TAGS):
        raise IngestError(Reason.NO_PIXEL_DATA, "The dataset has no (7FE0,0010) Pixel Data.")
    if "PixelData" not in ds:
        raise IngestError(
            Reason.UNSUPPORTED_PHOTOMETRIC,
            "Float or Double Float Pixel Data (parametric maps) is not a radiograph.",
        )
    uid = transfer_syntax(ds)
    if uid is None:
        raise IngestError(
            Reason.UNSUPPORTED_TRANSFER_SYNTAX,
            "The file has no (0002,0010) Transfer Syntax UID and its encoding is unknown.",
        )
    try:
        decoder = get_decoder(uid)
    except NotImplementedError as exc:
        raise IngestError(
            Reason.UNSUPPORTED_TRANSFER_SYNTAX,
            f"(0002,0010) Transfer Syntax UID '{uid}' ({uid.name}) has no pixel decoder.",
        ) from exc
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "a decoding plugin"
        raise IngestError(
            Reason.MISSING_CODEC,
            f"No codec is installed for '{uid.name}'. Install one of: {missing}.",
        )
    rows, columns, samples = check_geometry(ds, max_pixels)
    if uid.is_encapsulated:
        check_codestream(ds, rows, columns, samples, max_pixels)


def check_codestream(
    ds: Dataset, rows: int, columns: int, samples: int, max_pixels: int = MAX_PIXELS
) -> None:
    """Bound what the decoder will allocate by the codestream's own frame header.

    The decoder trusts the JPEG SOF or JPEG 2000 SIZ marker, not (0028,0010)/(0028,0011):
    refuse ``too_large`` when the codestream's size passes ``max_pixels``, and ``corrupt``
    when it disagrees with the header (the image would not be the one described).
    """
    try:
        first = next(generate_frames(ds.PixelData, number_of_frames=1), b"")
    except LIBRARY_ERRORS as exc:
        raise IngestError(
            Reason.CORRUPT,
            f"The encapsulated (7FE0,0010) Pixel Data cannot be split into "
            f"frames ({type(exc).__name__}).",
        ) from exc
    check_frame_header(first, rows, columns, samples, max_pixels)


def check_frame_header(
    first: bytes, rows: int, columns: int, samples: int, max_pixels: int = MAX_PIXELS
) -> None:
    """:func:`check_codestream` on the first bytes of the first frame (the frame header is
    within its first kilobytes): what a reader that holds only those bytes can check, such
    as the DICOM receiver before it answers a C-STORE.

    The frame header is read by :func:`ingest.codestream.read_frame_header`, the one reader
    the fast decode (:mod:`ingest.reduced`) uses too. Markers that no decoder makes an image
    of (two frame headers, SOS before one, a JP2 without a reachable codestream box) are
    ``corrupt`` here, before a decoder that reads them differently allocates for them.
    """
    try:
        header = read_frame_header(first)
    except TruncatedCodestreamError as exc:
        if not is_jp2(first):
            return  # no frame header in these bytes: nothing a decoder could size an image by
        # A JP2 file whose codestream box cannot be found by walking its boxes: what the
        # decoder would allocate cannot be bounded, so it never sees the file.
        raise IngestError(
            Reason.CORRUPT, f"The JPEG 2000 (JP2) frame's codestream cannot be found: {exc}"
        ) from exc
    except CodestreamError as exc:
        raise IngestError(
            Reason.CORRUPT, f"The {exc.format} codestream cannot be read: {exc}"
        ) from exc
    if header is None:
        return  # RLE, or not a JPEG or JPEG 2000 stream: the decoder's own checks apply
    stream_rows = header.rows or rows  # JPEG: 0 lines means a DNL marker sets them later
    count = stream_rows * header.columns * max(header.components, 1)
    if count > max_pixels:
        raise IngestError(
            Reason.TOO_LARGE,
            f"The {header.format} codestream's frame header says {stream_rows} x "
            f"{header.columns} px x {header.components} components = {count:,} values, over "
            f"the {max_pixels:,} limit (decompression bomb guard; the DICOM header said "
            f"{rows} x {columns}).",
        )
    if (stream_rows, header.columns, header.components) != (rows, columns, samples):
        raise IngestError(
            Reason.CORRUPT,
            f"(0028,0010) Rows, (0028,0011) Columns and (0028,0002) Samples per Pixel say "
            f"{rows} x {columns} x {samples}; the {header.format} codestream says "
            f"{stream_rows} x {header.columns} x {header.components}.",
        )


def decode_frame(ds: Dataset, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode the one frame of ``ds``: ``(rows, cols)`` or ``(rows, cols, 3)`` stored values.

    pydicom masks unused high bits above (0028,0101) Bits Stored and sign-extends signed
    data; YBR_FULL/YBR_FULL_422 arrive converted to RGB.
    """
    check_decodable(ds, max_pixels)
    uid = transfer_syntax(ds)
    if uid in _UNCOMPRESSED:
        _check_native_length(ds)
    try:
        frame = decode_pixel_array(ds, index=0)
    except MemoryError as exc:
        raise IngestError(Reason.TOO_LARGE, "The decoded image does not fit in memory.") from exc
    except LIBRARY_ERRORS as exc:
        name = uid.name if uid else "unknown"
        raise IngestError(
            Reason.CORRUPT,
            f"The '{name}' pixel data cannot be decoded ({type(exc).__name__}: {_summary(exc)}).",
        ) from exc
    return np.asarray(frame)


def _check_native_length(ds: Dataset) -> None:
    expected = get_expected_length(ds, "bytes")
    actual = len(ds.PixelData)
    if actual < expected:
        raise IngestError(
            Reason.TRUNCATED,
            f"(7FE0,0010) Pixel Data holds {actual:,} bytes; the image needs {expected:,}.",
        )


def _summary(exc: BaseException, limit: int = 400) -> str:
    """The library's message on one line (each plugin's complaint), bounded in length."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text[:limit]


def decodable_transfer_syntaxes() -> tuple[UID, ...]:
    """Every transfer syntax whose pixels :func:`check_decodable` accepts here (a decoder
    with its codec installed), in pydicom's order: what a DICOM receiver may negotiate."""
    found: list[UID] = []
    for uid in AllTransferSyntaxes:
        try:
            if get_decoder(uid).is_available:
                found.append(UID(uid))
        except NotImplementedError:
            continue
    return tuple(found)
