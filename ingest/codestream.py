"""Image dimensions read from a codestream's own markers, before any decoder sees it.

A DICOM header's (0028,0010) Rows and (0028,0011) Columns are a claim; the decoder allocates
what the codestream says. A 1.2 kB file whose JPEG SOF said 65000 x 65000 under a header of
512 x 512 cost 38 s and 7.5 GiB before it was refused (issue 12). These parsers read only
the frame header of each format, so the pixel-count bound and the header's claim can be
checked against what the decoder would really do:

- JPEG (ISO/IEC 10918-1 B.2.2): SOF0-SOF3, SOF5-SOF7, SOF9-SOF11, SOF13-SOF15 give
  lines (Y), samples per line (X) and components; JPEG-LS (ISO/IEC 14495-1 C.2.2) uses
  the same layout under SOF55 (FFF7).
- JPEG 2000 and HTJ2K (ISO/IEC 15444-1 A.5.1, 15444-15): the SIZ marker right after SOC
  gives the reference grid and image offset. A raw codestream starts with SOC SIZ; a JP2
  file's codestream is the content of its first top-level Contiguous Codestream box
  (``jp2c``, 15444-1 I.5.4), found by walking the boxes as the decoder does, never by
  searching for the marker bytes: a decoy SOC SIZ inside an XML or UUID box is not what
  the decoder will read (:func:`j2k_codestream_start`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_SOI = b"\xff\xd8"
_J2K_SOC_SIZ = b"\xff\x4f\xff\x51"
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
#: Start-of-frame markers: every JPEG process, and JPEG-LS (SOF55). Not DHT (C4), JPG (C8),
#: DAC (CC), which share the range.
_SOF_MARKERS = frozenset({*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC)}) | {
    0xCD,
    0xCE,
    0xCF,
    0xF7,
}
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length field
#: Top-level JP2 boxes walked before ``jp2c`` at most. Real JP2 files have about five
#: (signature, ftyp, jp2h, perhaps res/xml/uuid); 32 MB of 8-byte boxes took 0.8 s of
#: Python per walk. Beyond this many the file is taken as corrupt (no codestream found).
MAX_JP2_BOXES = 64


@dataclass(frozen=True)
class CodestreamSize:
    """What a codestream's frame header says; ``rows`` 0 means "set later" (JPEG DNL)."""

    format: str  # "JPEG", "JPEG-LS" or "JPEG 2000"
    rows: int
    columns: int
    components: int


def codestream_size(data: bytes) -> CodestreamSize | None:
    """The frame header of the JPEG, JPEG-LS or JPEG 2000 stream in ``data``, else None.

    ``data`` need only hold the stream's first bytes (the markers before the entropy-coded
    data). None means the format is not one of these or its frame header was not found
    in ``data``; the caller decides whether that is acceptable.
    """
    if data.startswith(_SOI):
        return _jpeg_size(data)
    start = j2k_codestream_start(data)
    return None if start is None else _siz_size(data, start + 2)


def is_jp2(data: bytes) -> bool:
    """``data`` begins with the JP2 signature box (a JPEG 2000 file, not a raw codestream)."""
    return data.startswith(_JP2_SIGNATURE)


def j2k_codestream_start(data: bytes) -> int | None:
    """Offset of the JPEG 2000 codestream's SOC marker in ``data``, else None.

    0 for a raw codestream (SOC SIZ first). In a JP2 file (15444-1 I.4: boxes of LBox,
    TBox, optional XLBox when LBox is 1, LBox 0 meaning "to the end"), the content of the
    first top-level ``jp2c`` box, which must itself begin with SOC SIZ. None when neither
    holds, a box length runs backwards or past the data, or ``jp2c`` is not among the first
    :data:`MAX_JP2_BOXES` boxes.
    """
    if data.startswith(_J2K_SOC_SIZ):
        return 0
    if not is_jp2(data):
        return None
    at = 0
    for _ in range(MAX_JP2_BOXES):
        if at + 8 > len(data):
            return None
        length, kind = struct.unpack_from(">I4s", data, at)
        header = 8
        if length == 1:  # XLBox: a 64-bit length follows the type
            if at + 16 > len(data):
                return None
            (length,) = struct.unpack_from(">Q", data, at + 8)
            header = 16
        elif length == 0:  # the last box: to the end of the data
            length = len(data) - at
        if kind == b"jp2c":
            start = at + header
            return start if data[start : start + 4] == _J2K_SOC_SIZ else None
        if length < header:
            return None
        at += length
    return None


def _jpeg_size(data: bytes) -> CodestreamSize | None:
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None  # not at a marker: a broken stream, for the decoder to report
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _STANDALONE:
            at += 2
            continue
        if marker in (0xD9, 0xDA):  # EOI or SOS before any frame header
            return None
        (length,) = struct.unpack_from(">H", data, at + 2)
        if marker in _SOF_MARKERS:
            if at + 10 > len(data):
                return None
            rows, columns = struct.unpack_from(">HH", data, at + 5)
            return CodestreamSize(
                "JPEG-LS" if marker == 0xF7 else "JPEG", rows, columns, data[at + 9]
            )
        if length < 2:
            return None
        at += 2 + length
    return None


def _siz_size(data: bytes, at: int) -> CodestreamSize | None:
    """SIZ: FF51, Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz, XTsiz, YTsiz, XTOsiz, YTOsiz, Csiz."""
    if at + 40 > len(data) or data[at : at + 2] != b"\xff\x51":
        return None
    x, y, x_offset, y_offset = struct.unpack_from(">IIII", data, at + 6)
    (components,) = struct.unpack_from(">H", data, at + 38)
    return CodestreamSize("JPEG 2000", max(y - y_offset, 0), max(x - x_offset, 0), components)
