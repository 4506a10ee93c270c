"""Where a JPEG 2000 frame's codestream starts: at 0 for a raw codestream, inside the first
top-level ``jp2c`` box for a JP2 file, never at marker bytes found elsewhere."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from pydicom.uid import JPEG2000Lossless

from ingest import IngestError, read_image
from ingest.codestream import MAX_JP2_BOXES, codestream_size, j2k_codestream_start
from tests.ingest.dicom_factory import base_dataset, encapsulated, set_pixels, write

SOC_SIZ = b"\xff\x4f\xff\x51"
SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
RAMP = (np.arange(48 * 40).reshape(48, 40) % 256).astype(np.uint8)


def raw() -> bytes:
    return bytes(imagecodecs.jpeg2k_encode(RAMP, level=0, codecformat="J2K"))


def box(kind: bytes, content: bytes, form: str = "short") -> bytes:
    """A JP2 box: LBox + TBox (``short``), LBox 1 + TBox + XLBox (``xl``), LBox 0 (``last``)."""
    if form == "xl":
        return struct.pack(">I4sQ", 1, kind, 16 + len(content)) + content
    if form == "last":
        return struct.pack(">I4s", 0, kind) + content
    return struct.pack(">I4s", 8 + len(content), kind) + content


def jp2(*boxes: bytes) -> bytes:
    return SIGNATURE + box(b"ftyp", b"jp2 \x00\x00\x00\x00jp2 ") + b"".join(boxes)


def test_a_raw_codestream_starts_at_zero() -> None:
    assert j2k_codestream_start(raw()) == 0
    size = codestream_size(raw())
    assert size is not None and (size.rows, size.columns) == (48, 40)


@pytest.mark.parametrize("form", ["short", "xl", "last"])
def test_the_jp2c_box_is_found_by_walking_the_boxes(form: str) -> None:
    decoy = box(b"xml ", SOC_SIZ + b"\x00" * 60)  # marker bytes the decoder never reads
    data = jp2(decoy, box(b"jp2h", b"\x00" * 30), box(b"jp2c", raw(), form))
    start = j2k_codestream_start(data)
    assert start is not None and data[start:] == raw()
    assert start > data.index(SOC_SIZ)  # not the decoy's offset


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(jp2(box(b"xml ", raw())), id="marker bytes but no jp2c box"),
        pytest.param(jp2(box(b"jp2c", b"\x00\x00" + raw())), id="jp2c not starting with SOC SIZ"),
        pytest.param(jp2(struct.pack(">I4s", 4, b"xml ") + raw()), id="box length under 8"),
        pytest.param(jp2(struct.pack(">I4s", 1, b"jp2c")), id="XLBox cut off"),
        pytest.param(b"\x00" * 8 + SOC_SIZ + raw(), id="neither raw nor JP2"),
    ],
)
def test_no_codestream_is_made_up(data: bytes) -> None:
    assert j2k_codestream_start(data) is None
    assert codestream_size(data) is None


def test_jp2c_after_the_box_cap_is_not_searched_for() -> None:
    """A JP2 padded with empty boxes: found within MAX_JP2_BOXES, refused beyond (corrupt)."""
    within = jp2(*[box(b"free", b"")] * (MAX_JP2_BOXES - 3), box(b"jp2c", raw()))
    start = j2k_codestream_start(within)
    assert start is not None and within[start:] == raw()
    beyond = jp2(*[box(b"free", b"")] * (MAX_JP2_BOXES - 2), box(b"jp2c", raw()))
    assert j2k_codestream_start(beyond) is None
    assert codestream_size(beyond) is None


def test_a_jp2_of_millions_of_boxes_is_refused_as_corrupt_quickly(tmp_path: Path) -> None:
    """32 MB of 8-byte boxes before jp2c (0.8 s of Python per walk before the cap)."""
    data = jp2(box(b"free", b"") * 4_000_000, box(b"jp2c", raw()))
    ds = set_pixels(base_dataset(*RAMP.shape), RAMP)
    path = write(encapsulated(ds, data, JPEG2000Lossless), tmp_path / "boxes.dcm")
    started = time.perf_counter()
    for min_side in (None, 16):
        with pytest.raises(IngestError) as caught:
            read_image(path, min_side=min_side)
        assert caught.value.reason.value == "corrupt"
    assert time.perf_counter() - started < 2.0  # the uncapped walk: about 3 s here
