"""What a file is, decided from its first bytes, never from its name.

PS3.10 7.1: a DICOM file starts with a 128-byte preamble and the magic ``DICM``. Files
written without a preamble (a raw dataset, as some older systems export) are accepted
only when their first element is plausibly a group 0002 or 0008 tag; that check is what
makes reading them with ``force=True`` safe.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from ingest.errors import IngestError, Reason
from ingest.image import SourceKind

_DICOM_MAGIC_OFFSET = 128
_DICOM_MAGIC = b"DICM"
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: Groups a raw (preamble-less) dataset may start with: file meta or identifying.
_FIRST_GROUPS = frozenset({0x0002, 0x0008})
_VRS = frozenset(
    b"AE AS AT CS DA DS DT FL FD IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI "
    b"UL UN UR US UT UV".split()
)
HEAD_BYTES = 132


@dataclass(frozen=True)
class Sniffed:
    """The container a file's first bytes announce."""

    kind: SourceKind
    has_preamble: bool = False  # DICOM only: PS3.10 preamble and ``DICM`` present


def sniff(path: Path) -> Sniffed:
    """Return the format of ``path`` from its content; raise ``not_an_image`` otherwise."""
    with path.open("rb") as stream:
        head = stream.read(HEAD_BYTES)
    return sniff_bytes(head)


def sniff_bytes(head: bytes) -> Sniffed:
    """Return the format announced by ``head``, the first :data:`HEAD_BYTES` of a file."""
    if not head:
        raise IngestError(Reason.EMPTY_FILE, "The file is empty (0 bytes).")
    if head[_DICOM_MAGIC_OFFSET : _DICOM_MAGIC_OFFSET + 4] == _DICOM_MAGIC:
        return Sniffed(SourceKind.DICOM, has_preamble=True)
    if head.startswith(_JPEG_MAGIC):
        return Sniffed(SourceKind.JPEG)
    if head.startswith(_PNG_MAGIC):
        return Sniffed(SourceKind.PNG)
    if looks_like_raw_dataset(head):
        return Sniffed(SourceKind.DICOM, has_preamble=False)
    raise IngestError(
        Reason.NOT_AN_IMAGE,
        "The file is neither DICOM (no 'DICM' magic at byte 128 and no plausible first "
        "element) nor a JPEG or PNG image.",
    )


def looks_like_raw_dataset(head: bytes) -> bool:
    """True when ``head`` starts with a plausible (0002,xxxx) or (0008,xxxx) element.

    Either byte order; explicit VR must name a known VR, implicit VR a length that fits.
    """
    if len(head) < 8:
        return False
    for order in "<>":
        group, element = struct.unpack(f"{order}HH", head[:4])
        if group not in _FIRST_GROUPS or element > 0x0100:
            continue
        if head[4:6] in _VRS:
            return True
        (length,) = struct.unpack(f"{order}L", head[4:8])
        if length <= 0x400:  # identifying group elements are short
            return True
    return False
