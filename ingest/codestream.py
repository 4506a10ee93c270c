"""The frame header of a JPEG, JPEG-LS or JPEG 2000 codestream: read here, and only here.

A DICOM header's (0028,0010) Rows and (0028,0011) Columns are a claim; the decoder allocates
what the codestream says. A 1.2 kB file whose JPEG SOF said 65000 x 65000 under a header of
512 x 512 cost 38 s and 7.5 GiB before it was refused (issue 12). :func:`read_frame_header`
reads the frame header a decoder will size its image by, and both users take its
:class:`FrameHeader`: the bomb guard (:func:`ingest.dicom.check_frame_header`, which the DICOM
receiver also runs on a frame's first 64 KiB) and the fast decode (:mod:`ingest.reduced`).
A guard and a decoder that read the same bytes differently is how limits get bypassed, so
the walk follows the decoders installed here, not an idealised reading of the standard:

- JPEG (ITU-T T.81 B.1.1, B.2.2) and JPEG-LS (ITU-T T.87 C.2.2): from SOI, marker by marker
  up to the first SOS. Bytes between segments that are not a marker, 0xFF fill bytes and
  0xFF00 pairs are skipped, as libjpeg's ``next_marker`` and Pillow's parser skip them; a
  segment length under 2 ends the segment after its length field, as libjpeg's
  ``skip_variable`` and Pillow's ``_safe_read`` treat it. (The guard used to give up at
  such bytes while pydicom's Pillow plugin read on to a SOF of 12000 x 12000 and decoded
  it: 741 MiB and 3 s for a 1 kB file, issue 23.) TEM and RST0-7 stand alone. The frame
  header is SOF0-SOF15 (not DHT, JPG or DAC, which share the range), SOF55 (JPEG-LS) or DHP
  (hierarchical: the whole image), and there is exactly one before the first scan: libjpeg
  sizes the image by the first and Pillow by the last, so a second is a
  :class:`MalformedCodestreamError`. So are SOS before the frame header, SOI or EOI before
  the first scan, and the reserved markers (RES, JPG, JPGn), at which libjpeg stops and
  past which Pillow reads on.
- JPEG 2000 and HTJ2K (ISO/IEC 15444-1 A.5.1, A.6.1; 15444-15): the SIZ marker right after
  SOC gives the reference grid, the image offset, the components and their precision; the
  main header's COD gives the decomposition levels. A raw codestream starts with SOC SIZ; a
  JP2 file's codestream is the content of its first top-level Contiguous Codestream box
  (``jp2c``, 15444-1 I.5.4), found by walking the boxes as the decoder does, never by
  searching for the marker bytes: a decoy SOC SIZ inside an XML or UUID box is not what the
  decoder will read (:func:`j2k_codestream_start`).

Every read is bounds-checked: what does not fit raises a named :class:`CodestreamError`,
never ``struct.error`` or ``IndexError``. :class:`TruncatedCodestreamError` means the bytes
end before the frame header (a receiver holding only a frame's first bytes, or a frame cut
short: no decoder can size an image from it either); :class:`MalformedCodestreamError`
means the markers themselves are wrong.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from enum import StrEnum

_SOI = b"\xff\xd8"
_J2K_SOC_SIZ = b"\xff\x4f\xff\x51"
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
#: The next marker as libjpeg's ``next_marker`` finds it: the last 0xFF of a run that is
#: followed by neither 0x00 (a stuffed byte, skipped) nor another 0xFF (fill). One C-level
#: search, linear in the bytes skipped whatever they hold.
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xff]")

_SOS, _EOI, _DHP, _SOF55, _LSE = 0xDA, 0xD9, 0xDE, 0xF7, 0xF8
#: Frame headers: SOF0-SOF15 except DHT (C4), JPG (C8) and DAC (CC), which share the range;
#: SOF55 (JPEG-LS); DHP, the hierarchical process's frame header for the whole image.
_FRAME_HEADERS = frozenset(
    {*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), 0xCD, 0xCE, 0xCF}
) | {_SOF55, _DHP}
#: Markers without a length field that may precede the first scan: TEM, RST0-RST7.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
#: Reserved markers: RES (02-BF), JPG (C8) and JPG0-JPG13 except SOF55 and LSE (F0-FD).
#: libjpeg stops at them, Pillow takes them as standalone and reads on: no decoder here
#: makes an image of a stream holding one, and the two disagree on where the next marker is.
_RESERVED = frozenset({*range(0x02, 0xC0), 0xC8, *range(0xF0, 0xFE)}) - {_SOF55, _LSE}
_MARKER_NAMES = {0x01: "TEM", 0xC4: "DHT", 0xC8: "JPG", 0xCC: "DAC", 0xD8: "SOI", 0xD9: "EOI"}
_MARKER_NAMES |= {0xDA: "SOS", 0xDB: "DQT", 0xDC: "DNL", 0xDD: "DRI", 0xDE: "DHP", 0xDF: "EXP"}
_MARKER_NAMES |= {_SOF55: "SOF55", _LSE: "LSE", 0xFE: "COM"}
#: The SOF fields read (T.81 B.2.2): Lf, P, Y, X, Nf.
_SOF_FIELDS = 8
#: SOC, then SIZ up to and with the first component's Ssiz (15444-1 A.5.1).
_SIZ_BYTES = 2 + 41

#: Markers read before the first scan (JPEG) or before COD (JPEG 2000) at most. A JPEG in a
#: DICOM frame has about ten (APPn, DQT, DHT, SOF, DRI); an ICC profile adds at most 255
#: APP2 chunks. A 32 MB run of 4-byte COM segments took 8.8 s of Python per walk without
#: the cap, 6 ms with it; beyond this many the stream is malformed.
MAX_HEADER_MARKERS = 4096
#: Top-level JP2 boxes walked before ``jp2c`` at most. Real JP2 files have about five
#: (signature, ftyp, jp2h, perhaps res/xml/uuid); 32 MB of 8-byte boxes took 0.8 s of
#: Python per walk. Beyond this many the file is taken as corrupt (no codestream found).
MAX_JP2_BOXES = 64


class CodestreamFormat(StrEnum):
    """The codestream a frame holds, as messages name it."""

    JPEG = "JPEG"
    JPEG_LS = "JPEG-LS"
    JPEG_2000 = "JPEG 2000"


class CodestreamError(ValueError):
    """The frame header of a JPEG or JPEG 2000 codestream cannot be read."""

    def __init__(self, format: CodestreamFormat, message: str) -> None:
        super().__init__(message)
        self.format = format


class TruncatedCodestreamError(CodestreamError):
    """The bytes end before the frame header does: nothing there to size an image by."""


class MalformedCodestreamError(CodestreamError):
    """The markers before the frame header, or the frame header itself, are not valid."""


@dataclass(frozen=True)
class FrameHeader:
    """What a codestream's frame header says about the image the decoder will make.

    ``rows`` 0 means "set later" (a JPEG DNL marker). ``precision`` is bits per sample
    (JPEG P; JPEG 2000 the first component's Ssiz + 1) and ``signed`` is JPEG 2000's Ssiz
    bit 7 (JPEG samples are unsigned). ``levels`` is the JPEG 2000 decomposition levels
    (COD SPcod), None when no COD was found in the bytes given, and 0 for JPEG.
    ``marker`` is the frame header's marker code (0xC0-0xCF, 0xF7, 0xDE; 0x51 for SIZ).
    """

    format: CodestreamFormat
    marker: int
    rows: int
    columns: int
    components: int
    precision: int
    signed: bool = False
    levels: int | None = 0

    @property
    def marker_name(self) -> str:
        """The frame header's marker as the standards name it, e.g. ``SOF3`` or ``SIZ``."""
        if self.format is CodestreamFormat.JPEG_2000:
            return "SIZ"
        return marker_name(self.marker)


def read_frame_header(data: bytes) -> FrameHeader | None:
    """The frame header of the JPEG, JPEG-LS or JPEG 2000 stream that ``data`` begins.

    ``data`` need only hold the stream's first bytes (the markers before the entropy-coded
    data). None when ``data`` is none of these formats (no SOI, no SOC SIZ, no JP2
    signature): the caller's other checks apply. Raises :class:`TruncatedCodestreamError` when
    ``data`` ends before the frame header, :class:`MalformedCodestreamError` when the markers
    are not what any decoder here would make an image of.
    """
    if data.startswith(_SOI):
        return _jpeg_frame_header(data)
    start = j2k_codestream_start(data)
    return None if start is None else _j2k_frame_header(data, start)


def is_jp2(data: bytes) -> bool:
    """``data`` begins with the JP2 signature box (a JPEG 2000 file, not a raw codestream)."""
    return data.startswith(_JP2_SIGNATURE)


def j2k_codestream_start(data: bytes) -> int | None:
    """Offset of the JPEG 2000 codestream's SOC marker in ``data``; None when not JPEG 2000.

    0 for a raw codestream (SOC SIZ first). In a JP2 file (15444-1 I.4: boxes of LBox,
    TBox, optional XLBox when LBox is 1, LBox 0 meaning "to the end"), the content of the
    first top-level ``jp2c`` box, which must itself begin with SOC SIZ. Raises
    :class:`MalformedCodestreamError` when a box length runs backwards, ``jp2c`` does not begin
    with SOC SIZ or is not among the first :data:`MAX_JP2_BOXES` boxes, and
    :class:`TruncatedCodestreamError` when ``data`` ends before ``jp2c``.
    """
    if data.startswith(_J2K_SOC_SIZ):
        return 0
    if not is_jp2(data):
        return None
    at = 0
    for _ in range(MAX_JP2_BOXES):
        if at + 8 > len(data):
            raise _truncated_2k(f"The JP2 file ends at byte {len(data):,}, before its jp2c box.")
        length, kind = struct.unpack_from(">I4s", data, at)
        header = 8
        if length == 1:  # XLBox: a 64-bit length follows the type
            if at + 16 > len(data):
                raise _truncated_2k(f"The JP2 file ends inside the box header at byte {at:,}.")
            (length,) = struct.unpack_from(">Q", data, at + 8)
            header = 16
        elif length == 0:  # the last box: to the end of the data
            length = len(data) - at
        if kind == b"jp2c":
            start = at + header
            if start + 4 > len(data):
                raise _truncated_2k(f"The JP2 file ends inside the jp2c box at byte {at:,}.")
            if data[start : start + 4] != _J2K_SOC_SIZ:
                raise _malformed_2k(f"The jp2c box at byte {at:,} does not begin with SOC SIZ.")
            return start
        if length < header:
            raise _malformed_2k(f"The JP2 box at byte {at:,} says it is {length} bytes long.")
        at += length
    raise _malformed_2k(f"The JP2 file has no jp2c box within its first {MAX_JP2_BOXES} boxes.")


def marker_name(code: int) -> str:
    """The T.81 / T.87 name of JPEG marker ``0xFF<code>``, e.g. ``SOF0``, ``APP1``, ``RST3``."""
    if code in _MARKER_NAMES:
        return _MARKER_NAMES[code]
    if 0xC0 <= code <= 0xCF:
        return f"SOF{code - 0xC0}"
    if 0xD0 <= code <= 0xD7:
        return f"RST{code - 0xD0}"
    if 0xE0 <= code <= 0xEF:
        return f"APP{code - 0xE0}"
    if 0xF0 <= code <= 0xFD:
        return f"JPG{code - 0xF0}"
    return f"RES (FF{code:02X})"


def _jpeg_frame_header(data: bytes) -> FrameHeader:
    """Walk from SOI to the first SOS; the one frame header on the way (T.81 B.2, T.87 C.2)."""
    found: FrameHeader | None = None
    found_at = 0
    at = 2
    for _ in range(MAX_HEADER_MARKERS):
        next_marker = _NEXT_MARKER.search(data, at)
        if next_marker is None:
            if found is not None:
                return found  # the bytes end after the frame header: what they hold is read
            raise _truncated(f"The JPEG stream ends at byte {len(data):,}, before a frame header.")
        code = data[next_marker.start() + 1]
        marker_at, at = next_marker.start(), next_marker.end()
        if code in _STANDALONE:
            continue
        if code == _SOS and found is not None:
            return found
        if code in (_SOS, _EOI, 0xD8) or code in _RESERVED:
            where = "before a frame header" if found is None else "before the first scan"
            raise _malformed(f"{marker_name(code)} at byte {marker_at:,}, {where}.")
        if at + 2 > len(data):
            if found is not None:
                return found
            raise _truncated(f"The JPEG stream ends inside {marker_name(code)}'s length field.")
        (length,) = struct.unpack_from(">H", data, at)
        if code in _FRAME_HEADERS:
            if found is not None:
                raise _malformed(
                    f"A second frame header, {marker_name(code)} at byte {marker_at:,}, after "
                    f"{found.marker_name} at byte {found_at:,} and before the first scan."
                )
            found, found_at = _sof(data, code, marker_at, length), marker_at
        at += max(length, 2)  # under 2: the segment ends after its length field (libjpeg)
    raise _malformed(f"More than {MAX_HEADER_MARKERS} markers before the first scan.")


def _sof(data: bytes, code: int, marker_at: int, length: int) -> FrameHeader:
    """SOFn / SOF55 / DHP: Lf, P, Y (lines), X (samples per line), Nf (T.81 B.2.2, B.3.2)."""
    if length < _SOF_FIELDS:
        name = marker_name(code)
        raise _malformed(f"{name} at byte {marker_at:,} is {length} bytes long, under 8.")
    if marker_at + 2 + _SOF_FIELDS > len(data):
        name = marker_name(code)
        raise _truncated(f"The JPEG stream ends inside {name} at byte {marker_at:,}.")
    precision, rows, columns, components = struct.unpack_from(">BHHB", data, marker_at + 4)
    return FrameHeader(
        CodestreamFormat.JPEG_LS if code == _SOF55 else CodestreamFormat.JPEG,
        code,
        rows,
        columns,
        components,
        precision,
    )


def _j2k_frame_header(data: bytes, start: int) -> FrameHeader:
    """SIZ (15444-1 A.5.1): FF51, Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz, XTsiz, YTsiz, XTOsiz,
    YTOsiz, Csiz, then per component Ssiz (bit 7 signed, bits 0-6 precision - 1), ...; the
    image is (Xsiz - XOsiz) x (Ysiz - YOsiz) on the reference grid."""
    if start + _SIZ_BYTES > len(data):
        raise _truncated_2k(f"The JPEG 2000 codestream ends inside SIZ at byte {start + 2:,}.")
    siz = start + 2
    (length,) = struct.unpack_from(">H", data, siz + 2)
    x, y, x_offset, y_offset = struct.unpack_from(">IIII", data, siz + 6)
    (components,) = struct.unpack_from(">H", data, siz + 38)
    ssiz = data[siz + 40]
    return FrameHeader(
        CodestreamFormat.JPEG_2000,
        0x51,
        max(y - y_offset, 0),
        max(x - x_offset, 0),
        components,
        precision=(ssiz & 0x7F) + 1,
        signed=bool(ssiz & 0x80),
        levels=_cod_levels(data, siz + 2 + length),
    )


def _cod_levels(data: bytes, at: int) -> int | None:
    """Walk the main header's marker segments from ``at`` to COD: SPcod's number of
    decomposition levels (15444-1 A.6.1: FF52, Lcod, Scod, progression, layers (2), MCT,
    levels), the most a reduced decode may ask for. None without a COD before the first
    tile-part (SOT) within the bytes given, or when a marker segment is not well formed."""
    for _ in range(MAX_HEADER_MARKERS):
        if at + 4 > len(data) or data[at] != 0xFF:
            return None
        if data[at + 1] == 0x52:  # COD
            return data[at + 9] if at + 10 <= len(data) else None
        if data[at + 1] == 0x90:  # SOT: the main header ended without COD
            return None
        (length,) = struct.unpack_from(">H", data, at + 2)
        if length < 2:
            return None
        at += 2 + length
    return None


def _truncated(message: str) -> TruncatedCodestreamError:
    return TruncatedCodestreamError(CodestreamFormat.JPEG, message)


def _malformed(message: str) -> MalformedCodestreamError:
    return MalformedCodestreamError(CodestreamFormat.JPEG, message)


def _truncated_2k(message: str) -> TruncatedCodestreamError:
    return TruncatedCodestreamError(CodestreamFormat.JPEG_2000, message)


def _malformed_2k(message: str) -> MalformedCodestreamError:
    return MalformedCodestreamError(CodestreamFormat.JPEG_2000, message)
