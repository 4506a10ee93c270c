"""Decompression bombs are refused from what the stream says, before a decoder allocates.

Reproduces issue 12: a 1 MB Deflated Explicit VR Little Endian file took the watcher to
2.2 GB (its header read inflated everything); a 1.2 kB DICOM whose JPEG SOF said
65000 x 65000 took 38 s and 7.5 GiB; a JPEG 2000 codestream of 11000 x 11000 under a
64 x 64 header was decoded. Each file is read in a child Python under ``prlimit --as``
(1 GiB) and must be refused with a reason naming the guard, at a peak RSS of a few tens of
MiB. Times and peaks for the README come from ``bench/bench_input_bombs.py``.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.ingest.dicom_factory import (
    jpeg_grey,
    native_8bit,
    sample_jpegs,
    write,
)
from tests.reliability.bombs import (
    HIDING_PLACES,
    deflate_bomb,
    j2k_siz_bomb,
    jp2_with_decoy,
    jpeg_hidden_sof_bomb,
    jpeg_second_sof_bomb,
    jpeg_sof_bomb,
    read_bounded,
)

#: Far below what inflating or decoding any of these bombs needs (1 to 7.5 GiB).
PEAK_RSS_BOUND_MIB = 300


@pytest.fixture(scope="module")
def deflated_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return deflate_bomb(tmp_path_factory.mktemp("deflate") / "bomb.dcm")


@pytest.mark.slow
@pytest.mark.parametrize("what", ["header", "image"])
def test_a_deflate_bomb_is_refused_while_inflating(deflated_bomb: Path, what: str) -> None:
    assert deflated_bomb.stat().st_size < 1_100_000  # 1 MB on disk, 1 GiB inflated
    read = read_bounded(deflated_bomb, what)
    assert read.returncode == 0, read.stderr
    assert read.reason == "too_large", read
    assert "deflate bomb guard" in read.message
    assert read.peak_rss_mib < PEAK_RSS_BOUND_MIB, read


def test_a_small_deflated_dicom_still_reads(tmp_path: Path) -> None:
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from ingest import read_image

    ref = jpeg_grey(sample_jpegs(1)[0])
    ds = native_8bit(ref)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = write(ds, tmp_path / "deflated.dcm")
    assert path.stat().st_size < ref.size  # it really is compressed
    np.testing.assert_allclose(read_image(path).pixels, ref.astype(np.float32), atol=1e-3)


def test_a_jpeg_sof_of_65000_squared_under_a_small_header_is_refused(tmp_path: Path) -> None:
    path = jpeg_sof_bomb(tmp_path / "sof.dcm")
    assert path.stat().st_size < 4096
    read = read_bounded(path, "image")
    assert read.returncode == 0, read.stderr
    assert read.reason == "too_large", read
    assert "JPEG codestream's frame header says 65000 x 65000" in read.message
    assert read.peak_rss_mib < PEAK_RSS_BOUND_MIB, read


@pytest.mark.parametrize("place", list(HIDING_PLACES))
def test_a_jpeg_sof_bomb_behind_bytes_decoders_skip_is_refused(tmp_path: Path, place: str) -> None:
    """libjpeg and Pillow read past stray bytes, FF00 pairs, fill bytes, a segment length
    under 2 and RSTn to the SOF behind; the guard reads the same SOF (before issue 23 it
    stopped at the first three and the decoder made 12000 x 12000: 741 MiB, 3 s)."""
    path = jpeg_hidden_sof_bomb(tmp_path / "hidden.dcm", HIDING_PLACES[place])
    read = read_bounded(path, "image-reduced")  # what the worker reads
    assert read.returncode == 0, read.stderr
    assert read.reason == "too_large", read
    assert "JPEG codestream's frame header says 12000 x 12000" in read.message
    assert read.peak_rss_mib < PEAK_RSS_BOUND_MIB, read


@pytest.mark.parametrize("place", list(HIDING_PLACES))
def test_the_receiver_s_first_bytes_show_the_hidden_sof_too(tmp_path: Path, place: str) -> None:
    """The DICOM receiver checks a frame's first 64 KiB with the same function before it
    answers Success (pacs.object_checks)."""
    from pydicom import dcmread
    from pydicom.encaps import get_frame

    from ingest import IngestError, Reason
    from ingest.dicom import check_frame_header

    path = jpeg_hidden_sof_bomb(tmp_path / "hidden.dcm", HIDING_PLACES[place])
    frame = get_frame(dcmread(path).PixelData, 0, number_of_frames=1)
    with pytest.raises(IngestError) as caught:
        check_frame_header(frame[: 64 * 1024], 64, 64, 1)
    assert caught.value.reason is Reason.TOO_LARGE


def test_a_second_sof_before_the_scan_is_refused_before_decoding(tmp_path: Path) -> None:
    """A 64 x 64 SOF, then one of 12000 x 12000: libjpeg refuses the second, Pillow sizes its
    image by it. The guard used to measure the first only and let the decoders at it."""
    from ingest import IngestError, Reason, read_image

    path = jpeg_second_sof_bomb(tmp_path / "second.dcm")
    for min_side in (None, 384):
        with pytest.raises(IngestError) as caught:
            read_image(path, min_side=min_side)
        assert caught.value.reason is Reason.CORRUPT
        assert "A second frame header, SOF0 at byte" in caught.value.message


def test_a_j2k_siz_of_11000_squared_under_a_small_header_is_refused(tmp_path: Path) -> None:
    path = j2k_siz_bomb(tmp_path / "j2k.dcm")
    assert path.stat().st_size < 2048
    read = read_bounded(path, "image")
    assert read.returncode == 0, read.stderr
    assert read.reason == "too_large", read
    assert "JPEG 2000 codestream's frame header says 11000 x 11000" in read.message
    assert read.peak_rss_mib < PEAK_RSS_BOUND_MIB, read


def test_a_decoy_siz_before_a_jp2_bomb_does_not_hide_it(tmp_path: Path) -> None:
    """JP2: a 64 x 64 SIZ in an XML box first, the decoder's codestream says 11000 x 11000."""
    path = jp2_with_decoy(tmp_path / "jp2.dcm", decoy_side=64, real_side=11_000)
    for what in ("image", "image-reduced"):
        read = read_bounded(path, what)
        assert read.returncode == 0, read.stderr
        assert read.reason == "too_large", read
        assert "JPEG 2000 codestream's frame header says 11000 x 11000" in read.message
        assert read.peak_rss_mib < PEAK_RSS_BOUND_MIB, read


def test_a_huge_decoy_siz_before_a_small_jp2_codestream_is_not_what_is_measured(
    tmp_path: Path,
) -> None:
    """The decoder never reads the decoy: no refusal, and the reduce decision is the real
    codestream's (the pixels are those of the same codestream without the decoy)."""
    from ingest import read_image

    path = jp2_with_decoy(tmp_path / "jp2.dcm", decoy_side=11_000, real_side=64)
    plain = j2k_siz_bomb(tmp_path / "plain.dcm", side=64)  # the raw codestream, unchanged
    np.testing.assert_array_equal(read_image(path).pixels, read_image(plain).pixels)
    reduced = read_image(path, min_side=32)
    assert reduced.normalization.steps[0].startswith("decode:jpeg2000 reduce=1 (openjpeg)")
    assert reduced.pixels.shape == (32, 32)
    np.testing.assert_array_equal(reduced.pixels, read_image(plain, min_side=32).pixels)


def test_a_codestream_that_disagrees_with_rows_and_columns_is_corrupt(tmp_path: Path) -> None:
    """Within the pixel bound, but not the image the header describes: refused, not guessed."""
    from ingest import IngestError, Reason, read_image

    path = jpeg_sof_bomb(tmp_path / "sof.dcm", side=2000)
    with pytest.raises(IngestError) as caught:
        read_image(path)
    assert caught.value.reason is Reason.CORRUPT
    assert "64 x 64 x 1; the JPEG codestream says 2000 x 2000 x 1" in caught.value.message


@pytest.mark.parametrize("codec", ["jpeg_ls", "htj2k", "jpeg_lossless", "jpeg_extended"])
def test_other_codestreams_are_measured_by_their_own_markers(codec: str) -> None:
    """JPEG-LS SOF55, HTJ2K SIZ, lossless SOF3 and extended SOF1 give the image's size
    (tests/ingest/test_encodings.py decodes files of each through the same check;
    tests/ingest/test_codestream.py reads every frame-header type)."""
    import imagecodecs

    from ingest.codestream import read_frame_header

    ramp = (np.arange(48 * 80).reshape(48, 80) % 251).astype(np.uint16)
    if codec == "jpeg_ls":
        stream = imagecodecs.jpegls_encode(ramp.astype(np.uint8), level=0)
    elif codec == "htj2k":
        stream = imagecodecs.htj2k_encode(ramp, reversible=True)
    elif codec == "jpeg_lossless":
        stream = imagecodecs.jpeg8_encode(ramp, lossless=True, predictor=1, bitspersample=12)
    else:
        stream = imagecodecs.jpeg8_encode(ramp, level=90, bitspersample=12)
    header = read_frame_header(bytes(stream))
    assert header is not None and (header.rows, header.columns, header.components) == (48, 80, 1)
    expected = {"jpeg_ls": "JPEG-LS", "htj2k": "JPEG 2000"}.get(codec, "JPEG")
    assert header.format == expected


def test_a_bare_jpeg_whose_sof_says_65000_squared_is_refused(tmp_path: Path) -> None:
    """Plain JPEGs have no header but their SOF: Pillow reads it and the bound applies."""
    path = tmp_path / "sof.jpeg"
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8), mode="L").save(path, quality=90)
    stream = bytearray(path.read_bytes())
    at = stream.index(b"\xff\xc0")
    stream[at + 5 : at + 9] = struct.pack(">HH", 65_000, 65_000)
    path.write_bytes(bytes(stream))
    read = read_bounded(path, "image")
    assert read.returncode == 0, read.stderr
    assert read.reason == "too_large", read
    assert read.peak_rss_mib < PEAK_RSS_BOUND_MIB, read


def test_a_bare_png_whose_ihdr_says_60000_squared_is_refused(tmp_path: Path) -> None:
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    path = tmp_path / "bomb.png"
    ihdr = struct.pack(">IIBBBBB", 60_000, 60_000, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 60_001 * 64, 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat))
    read = read_bounded(path, "image")
    assert read.reason == "too_large", read
    assert read.peak_rss_mib < PEAK_RSS_BOUND_MIB, read
