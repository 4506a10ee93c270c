"""The one frame-header reader (:mod:`ingest.codestream`), on real and hostile codestreams.

What the bomb guard measures and what the fast decode decodes both come from
:func:`read_frame_header`, so every way a decoder could read a header differently is
pinned here: each start-of-frame type, standalone markers, fill and stray bytes, lying
segment lengths, truncation at every byte, two frame headers, the JP2 box walk.
"""

from __future__ import annotations

import io
import struct
import time
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from PIL import Image
from pydicom.uid import JPEG2000Lossless

from ingest import IngestError, read_image
from ingest.codestream import (
    MAX_HEADER_MARKERS,
    MAX_JP2_BOXES,
    CodestreamError,
    CodestreamFormat,
    FrameHeader,
    MalformedCodestreamError,
    TruncatedCodestreamError,
    j2k_codestream_start,
    marker_name,
    read_frame_header,
)
from tests.ingest.dicom_factory import base_dataset, encapsulated, set_pixels, write

SOC_SIZ = b"\xff\x4f\xff\x51"
SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
RAMP = (np.arange(48 * 40).reshape(48, 40) % 256).astype(np.uint8)
SOI, EOI = b"\xff\xd8", b"\xff\xd9"


# -- builders ------------------------------------------------------------------------------


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


def segment(code: int, body: bytes = b"") -> bytes:
    """A JPEG marker segment: FF code, a length counting itself, the body."""
    return bytes([0xFF, code]) + struct.pack(">H", 2 + len(body)) + body


def sof(code: int = 0xC0, rows: int = 48, columns: int = 40, components: int = 1) -> bytes:
    """A frame header (T.81 B.2.2): P, Y, X, Nf, then Ci Hi/Vi Tqi per component."""
    fields = struct.pack(">BHHB", 8, rows, columns, components)
    return segment(code, fields + b"\x01\x11\x00" * components)


#: A scan header and a few bytes of entropy-coded data (with a stuffed FF00 and an RST).
SCAN = segment(0xDA, b"\x01\x01\x00\x00\x3f\x00") + b"\x12\xff\x00\x34\xff\xd0\x56"


def jpeg(*parts: bytes) -> bytes:
    return SOI + b"".join(parts) + SCAN + EOI


def size(header: FrameHeader | None) -> tuple[int, int, int]:
    assert header is not None
    return header.rows, header.columns, header.components


def real_streams() -> dict[str, tuple[bytes, str, str, int]]:
    """Real encoders' codestreams: bytes, format, frame-header marker, precision."""
    ramp16 = (np.arange(48 * 40).reshape(48, 40) * 7 % 4096).astype(np.uint16)
    with io.BytesIO() as out:
        Image.fromarray(RAMP, mode="L").save(out, format="JPEG", quality=90)
        baseline = out.getvalue()
    with io.BytesIO() as out:
        Image.fromarray(RAMP, mode="L").save(out, format="JPEG", quality=90, progressive=True)
        progressive = out.getvalue()
    return {
        "baseline (Pillow)": (baseline, "JPEG", "SOF0", 8),
        "progressive (Pillow)": (progressive, "JPEG", "SOF2", 8),
        "extended 12-bit": (
            bytes(imagecodecs.jpeg8_encode(ramp16, level=90, bitspersample=12)),
            "JPEG",
            "SOF1",
            12,
        ),
        "lossless 12-bit": (
            bytes(imagecodecs.jpeg8_encode(ramp16, lossless=True, predictor=1, bitspersample=12)),
            "JPEG",
            "SOF3",
            12,
        ),
        "JPEG-LS 8-bit": (bytes(imagecodecs.jpegls_encode(RAMP, level=0)), "JPEG-LS", "SOF55", 8),
        "JPEG 2000 raw": (raw(), "JPEG 2000", "SIZ", 8),
        "JPEG 2000 JP2": (
            bytes(imagecodecs.jpeg2k_encode(RAMP, level=0, codecformat="JP2")),
            "JPEG 2000",
            "SIZ",
            8,
        ),
        "HTJ2K 12-bit": (
            bytes(imagecodecs.htj2k_encode(ramp16, reversible=True)),
            "JPEG 2000",
            "SIZ",
            16,
        ),
    }


REAL = real_streams()


# -- real codestreams ---------------------------------------------------------------------


@pytest.mark.parametrize("name", list(REAL))
def test_a_real_encoder_s_frame_header_is_read(name: str) -> None:
    stream, format, marker, precision = REAL[name]
    header = read_frame_header(stream)
    assert header is not None
    assert size(header) == (48, 40, 1)
    assert (header.format, header.marker_name, header.precision) == (format, marker, precision)
    assert not header.signed
    if format == "JPEG 2000":
        assert header.levels is not None and header.levels >= 1
    else:
        assert header.levels == 0


@pytest.mark.parametrize("name", list(REAL))
def test_a_stream_cut_at_any_byte_is_truncated_or_read_the_same(name: str) -> None:
    """What a receiver holding a frame's first bytes sees: the header it will see in full, or
    TruncatedCodestreamError; never another exception and never another size."""
    stream = REAL[name][0]
    whole = read_frame_header(stream)
    assert whole is not None
    signature = 12 if stream.startswith(SIGNATURE) else 4 if stream.startswith(SOC_SIZ) else 2
    for cut in range(signature, min(len(stream), 1200)):
        try:
            header = read_frame_header(stream[:cut])
        except TruncatedCodestreamError:
            continue
        assert header is not None
        assert (size(header), header.precision, header.marker) == (
            size(whole),
            whole.precision,
            whole.marker,
        ), cut
        assert header.levels in (whole.levels, None), cut  # COD may be past the cut


def test_dataset_jpegs_read_as_pillow_sizes_them(source_jpegs: list[Path]) -> None:
    """The dataset's own JPEG files (JFIF, perhaps EXIF): the size Pillow reads."""
    for path in source_jpegs:
        with Image.open(path) as image:
            columns, rows = image.size
            bands = len(image.getbands())
        header = read_frame_header(path.read_bytes())
        assert size(header) == (rows, columns, bands)


# -- each start-of-frame type -------------------------------------------------------------

FRAME_HEADER_CODES = [c for c in range(0xC0, 0xD0) if c not in (0xC4, 0xC8, 0xCC)] + [0xF7, 0xDE]


@pytest.mark.parametrize("code", FRAME_HEADER_CODES, ids=marker_name)
def test_every_start_of_frame_type_is_a_frame_header(code: int) -> None:
    header = read_frame_header(jpeg(segment(0xDB, b"\x00" * 65), sof(code, 300, 200, 3)))
    assert size(header) == (300, 200, 3)
    assert header is not None and header.marker == code and header.precision == 8
    expected = CodestreamFormat.JPEG_LS if code == 0xF7 else CodestreamFormat.JPEG
    assert header.format is expected


@pytest.mark.parametrize("code", [0xC4, 0xCC], ids=["DHT", "DAC"])
def test_dht_and_dac_share_the_range_but_are_not_frame_headers(code: int) -> None:
    """Their bodies are skipped by length, even when they hold what looks like a huge SOF."""
    decoy = struct.pack(">BHHB", 8, 65000, 65000, 1) + b"\x00" * 20
    assert size(read_frame_header(jpeg(segment(code, decoy), sof()))) == (48, 40, 1)


@pytest.mark.parametrize(
    "code", [0x02, 0x4F, 0xBF, 0xC8, 0xF0, 0xF6, 0xF9, 0xFD], ids=lambda c: f"FF{c:02X}"
)
def test_a_reserved_marker_before_the_scan_is_malformed(code: int) -> None:
    """libjpeg stops at RES, JPG and JPGn; Pillow reads them as standalone and reads on to
    whatever follows: the two would size different images, so neither is trusted."""
    with pytest.raises(MalformedCodestreamError, match="before a frame header"):
        read_frame_header(jpeg(segment(code, b"\x00\x00"), sof()))
    with pytest.raises(MalformedCodestreamError, match="before the first scan"):
        read_frame_header(jpeg(sof(), segment(code, b"\x00\x00")))


def test_the_jpeg_ls_preset_parameters_segment_is_skipped() -> None:
    lse = segment(0xF8, b"\x01" + b"\x00" * 10)  # LSE (T.87 C.2.4.1): a length-bearing segment
    assert size(read_frame_header(jpeg(sof(0xF7), lse))) == (48, 40, 1)
    assert size(read_frame_header(jpeg(lse, sof(0xF7)))) == (48, 40, 1)


# -- standalone markers, fill and stray bytes ---------------------------------------------


@pytest.mark.parametrize("code", [0x01, *range(0xD0, 0xD8)], ids=marker_name)
def test_tem_and_restart_markers_stand_alone(code: int) -> None:
    """No length field: read as one, they would eat the next segment's first two bytes."""
    assert size(read_frame_header(jpeg(bytes([0xFF, code]), sof(0xC1, 64, 32)))) == (64, 32, 1)


@pytest.mark.parametrize(
    ("parts", "where"),
    [
        pytest.param((SOI, sof()), "before a frame header", id="second SOI"),
        pytest.param((EOI, sof()), "before a frame header", id="EOI, then a frame header"),
        pytest.param((sof(), EOI), "before the first scan", id="EOI before the scan"),
        pytest.param((sof(), SOI), "before the first scan", id="SOI before the scan"),
    ],
)
def test_soi_or_eoi_inside_the_header_is_malformed(parts: tuple[bytes, ...], where: str) -> None:
    """libjpeg refuses a second SOI and stops at EOI; Pillow reads past both to any later
    SOF. No decoder makes an image of it, so it is refused rather than half-measured."""
    with pytest.raises(MalformedCodestreamError, match=where):
        read_frame_header(jpeg(*parts))


def test_a_scan_before_any_frame_header_is_malformed() -> None:
    with pytest.raises(MalformedCodestreamError, match="SOS at byte 2, before a frame header"):
        read_frame_header(SOI + SCAN + sof())


@pytest.mark.parametrize(
    "padding",
    [
        pytest.param(b"\xff", id="one fill byte"),
        pytest.param(b"\xff" * 1000, id="a thousand fill bytes"),
        pytest.param(b"\xff\x00" * 3, id="stuffed FF00 pairs"),
        pytest.param(b"\x00\x12", id="two stray bytes"),
        pytest.param(b"JFIF junk \x00\x00 \xff\x00 \xff", id="stray bytes and pairs"),
    ],
)
def test_fill_and_stray_bytes_between_segments_are_skipped_as_libjpeg_skips_them(
    padding: bytes,
) -> None:
    """libjpeg's next_marker (and Pillow) skip them with a warning and read the SOF behind."""
    app0 = segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    header = read_frame_header(jpeg(padding, app0, padding, sof(0xC0, 1500, 1200), padding))
    assert size(header) == (1500, 1200, 1)


def test_stray_bytes_to_the_end_are_truncation_not_a_frame_header() -> None:
    with pytest.raises(TruncatedCodestreamError):
        read_frame_header(SOI + b"\x00" * 5000 + b"\xff" * 5000)


# -- lying segment lengths ----------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1])
@pytest.mark.parametrize("code", [0xE0, 0xE1, 0xFE], ids=marker_name)
def test_a_length_under_two_ends_the_segment_after_its_length_field(code: int, length: int) -> None:
    """libjpeg's skip_variable and Pillow's _safe_read skip nothing for a length under 2 and
    read on from the next byte: the SOF there is the one they size the image by."""
    lying = bytes([0xFF, code]) + struct.pack(">H", length)
    assert size(read_frame_header(jpeg(lying, sof(0xC0, 12000, 12000)))) == (12000, 12000, 1)


def test_a_segment_length_past_the_end_is_truncation() -> None:
    stream = SOI + bytes([0xFF, 0xFE]) + struct.pack(">H", 0xFFFF) + sof()
    with pytest.raises(TruncatedCodestreamError):
        read_frame_header(stream)


def test_a_segment_length_hiding_a_frame_header_skips_it_as_decoders_do() -> None:
    """The SOF inside a COM's declared length is comment text to every decoder."""
    hidden = segment(0xFE, sof(0xC0, 65000, 65000))
    assert size(read_frame_header(jpeg(hidden, sof()))) == (48, 40, 1)


@pytest.mark.parametrize("length", [0, 1, 2, 5, 7])
def test_a_frame_header_shorter_than_its_fields_is_malformed(length: int) -> None:
    stream = SOI + b"\xff\xc0" + struct.pack(">H", length) + struct.pack(">BHHB", 8, 9, 9, 1)
    with pytest.raises(MalformedCodestreamError, match=f"is {length} bytes long"):
        read_frame_header(stream + SCAN)


@pytest.mark.parametrize("cut", range(1, 10))
def test_a_frame_header_cut_short_is_truncation(cut: int) -> None:
    frame = sof()
    with pytest.raises(TruncatedCodestreamError):
        read_frame_header(SOI + frame[:cut])


# -- one frame header ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [(0xC0, 0xC0), (0xC0, 0xC2), (0xC3, 0xF7), (0xDE, 0xC5)],
    ids=["SOF0 twice", "SOF0 then SOF2", "SOF3 then SOF55", "DHP then SOF5 (hierarchical)"],
)
def test_two_frame_headers_before_the_scan_are_malformed(first: int, second: int) -> None:
    """libjpeg sizes by the first and refuses the second; Pillow sizes by the last: a small
    SOF first and a huge one second passed a guard that read only the first."""
    stream = jpeg(sof(first), segment(0xC4, b"\x00" * 20), sof(second, 12000, 12000))
    with pytest.raises(MalformedCodestreamError, match="second frame header"):
        read_frame_header(stream)


def test_a_frame_header_after_the_first_scan_is_not_read() -> None:
    """Entropy-coded data is not walked (no decoder reads a header from it)."""
    stream = SOI + sof() + SCAN + sof(0xC0, 9000, 9000) + EOI
    assert size(read_frame_header(stream)) == (48, 40, 1)


def test_markers_before_the_scan_are_capped() -> None:
    """A long run of empty segments costs libjpeg microseconds and Python seconds per walk."""
    com = segment(0xFE)
    within = jpeg(com * (MAX_HEADER_MARKERS - 2), sof())
    assert size(read_frame_header(within)) == (48, 40, 1)
    beyond = jpeg(com * (MAX_HEADER_MARKERS - 1), sof())
    with pytest.raises(MalformedCodestreamError, match=f"More than {MAX_HEADER_MARKERS}"):
        read_frame_header(beyond)


@pytest.mark.parametrize("seed", range(40))
def test_garbage_after_a_plausible_start_is_read_or_named(seed: int) -> None:
    """Random bytes after each format's first bytes: a header, None or a CodestreamError."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, int(rng.integers(0, 400)), dtype=np.uint8).tobytes()
    for prefix in (b"", SOI, SOC_SIZ, SOI + b"\xff\xc0\x00\x0b", SIGNATURE, SOI + b"\xff"):
        try:
            header = read_frame_header(prefix + noise)
        except CodestreamError:
            continue
        assert header is None or isinstance(header, FrameHeader)


# -- JPEG 2000: SIZ and COD ---------------------------------------------------------------


def test_siz_gives_precision_sign_and_cod_the_levels() -> None:
    signed = (np.arange(256 * 192).reshape(256, 192) % 3000 - 1500).astype(np.int16)
    stream = bytes(imagecodecs.jpeg2k_encode(signed, level=0, codecformat="J2K", resolutions=4))
    header = read_frame_header(stream)
    assert header is not None
    assert (size(header), header.precision, header.signed, header.levels) == (
        (256, 192, 1),
        16,
        True,
        3,  # four resolutions: three decomposition levels
    )


def test_the_image_offset_is_taken_off_the_reference_grid() -> None:
    stream = bytearray(raw())
    struct.pack_into(">IIII", stream, 8, 1040, 1048, 1000, 1000)  # Xsiz Ysiz XOsiz YOsiz
    assert size(read_frame_header(bytes(stream)))[:2] == (48, 40)
    struct.pack_into(">II", stream, 16, 5000, 5000)  # offsets past the grid: an empty image
    assert size(read_frame_header(bytes(stream)))[:2] == (0, 0)


def test_a_main_header_without_cod_has_unknown_levels() -> None:
    stream = raw()
    (lsiz,) = struct.unpack_from(">H", stream, 4)
    cod = 4 + lsiz
    assert stream[cod : cod + 2] == b"\xff\x52"
    header = read_frame_header(stream[:cod] + b"\xff\x90" + stream[cod + 2 :])  # COD -> SOT
    assert header is not None and size(header) == (48, 40, 1) and header.levels is None
    lying = bytearray(stream)
    lying[cod + 1] = 0x64  # COM ...
    struct.pack_into(">H", lying, cod + 2, 1)  # ... of length 1
    header = read_frame_header(bytes(lying))
    assert header is not None and header.levels is None


# -- the JP2 box walk ---------------------------------------------------------------------


def test_a_raw_codestream_starts_at_zero() -> None:
    assert j2k_codestream_start(raw()) == 0
    assert size(read_frame_header(raw())) == (48, 40, 1)


@pytest.mark.parametrize("form", ["short", "xl", "last"])
def test_the_jp2c_box_is_found_by_walking_the_boxes(form: str) -> None:
    decoy = box(b"xml ", SOC_SIZ + b"\x00" * 60)  # marker bytes the decoder never reads
    data = jp2(decoy, box(b"jp2h", b"\x00" * 30), box(b"jp2c", raw(), form))
    start = j2k_codestream_start(data)
    assert start is not None and data[start:] == raw()
    assert start > data.index(SOC_SIZ)  # not the decoy's offset
    assert size(read_frame_header(data)) == (48, 40, 1)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        pytest.param(jp2(box(b"xml ", raw())), TruncatedCodestreamError, id="no jp2c box"),
        pytest.param(
            jp2(box(b"jp2c", b"\x00\x00" + raw())),
            MalformedCodestreamError,
            id="jp2c not starting with SOC SIZ",
        ),
        pytest.param(
            jp2(struct.pack(">I4s", 4, b"xml ") + raw()),
            MalformedCodestreamError,
            id="box length under 8",
        ),
        pytest.param(
            jp2(struct.pack(">I4s", 1, b"jp2c")), TruncatedCodestreamError, id="XLBox cut off"
        ),
        pytest.param(
            jp2(box(b"jp2c", raw()[:30])), TruncatedCodestreamError, id="SIZ cut off in jp2c"
        ),
    ],
)
def test_no_codestream_is_made_up(data: bytes, error: type[CodestreamError]) -> None:
    with pytest.raises(error):
        read_frame_header(data)


def test_neither_raw_nor_jp2_is_no_frame_header() -> None:
    data = b"\x00" * 8 + SOC_SIZ + raw()
    assert j2k_codestream_start(data) is None
    assert read_frame_header(data) is None


def test_jp2c_after_the_box_cap_is_not_searched_for() -> None:
    """A JP2 padded with empty boxes: found within MAX_JP2_BOXES, refused beyond (corrupt)."""
    within = jp2(*[box(b"free", b"")] * (MAX_JP2_BOXES - 3), box(b"jp2c", raw()))
    start = j2k_codestream_start(within)
    assert start is not None and within[start:] == raw()
    beyond = jp2(*[box(b"free", b"")] * (MAX_JP2_BOXES - 2), box(b"jp2c", raw()))
    with pytest.raises(MalformedCodestreamError, match="no jp2c box within its first"):
        j2k_codestream_start(beyond)


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
