"""Broken, hostile and unusual DICOM files each end as one named reason, never a crash."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydicom.encaps import encapsulate

from ingest import IngestError, Reason, read_header, read_image
from ingest.dicom import number_of_frames
from tests.datasets import REPO
from tests.ingest.dicom_factory import (
    jpeg_lossless_sv1_12bit,
    jpeg_ls_12bit,
    jpeg_ls_encoder_available,
    native_8bit,
    set_pixels,
    write,
)

RAMP = (np.arange(120 * 160).reshape(120, 160) % 256).astype(np.uint8)


def _reason(path: Path) -> Reason:
    with pytest.raises(IngestError) as caught:
        read_image(path)
    assert caught.value.message  # a sentence for the PACS administrator
    return caught.value.reason


def test_native_file_cut_short_is_truncated(tmp_path: Path) -> None:
    data = write(native_8bit(RAMP), tmp_path / "a.dcm").read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:-2000])
    assert _reason(cut) is Reason.TRUNCATED


def test_compressed_file_cut_short_is_truncated(tmp_path: Path) -> None:
    data = write(jpeg_lossless_sv1_12bit(RAMP), tmp_path / "a.dcm").read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) // 2])
    assert _reason(cut) is Reason.TRUNCATED


def test_header_cut_short_is_truncated(tmp_path: Path) -> None:
    data = write(native_8bit(RAMP), tmp_path / "a.dcm").read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:300])
    with pytest.raises(IngestError) as caught:
        read_header(cut)
    assert caught.value.reason is Reason.TRUNCATED


def test_claimed_dimensions_over_the_bound_are_too_large_before_decoding(tmp_path: Path) -> None:
    ds = native_8bit(RAMP)
    ds.Rows, ds.Columns = 60000, 60000  # 3.6 G pixels claimed, 19 kB stored
    assert _reason(write(ds, tmp_path / "bomb.dcm")) is Reason.TOO_LARGE


def test_element_length_beyond_any_file_is_too_large(tmp_path: Path) -> None:
    data = bytearray(write(native_8bit(RAMP), tmp_path / "a.dcm").read_bytes())
    at = data.find(b"\xe0\x7f\x10\x00OB\x00\x00")
    data[at + 8 : at + 12] = (0xFFFFFFF0).to_bytes(4, "little")
    hostile = tmp_path / "length.dcm"
    hostile.write_bytes(bytes(data))
    assert _reason(hostile) is Reason.TOO_LARGE


def test_multi_frame_is_rejected_by_the_frame_rule(tmp_path: Path) -> None:
    frames = np.stack([RAMP, RAMP])
    ds = native_8bit(RAMP)
    ds.NumberOfFrames = 2
    ds.PixelData = frames.tobytes()
    assert _reason(write(ds, tmp_path / "two.dcm")) is Reason.MULTI_FRAME


def test_number_of_frames_zero_or_absent_is_one_frame(tmp_path: Path) -> None:
    ds = native_8bit(RAMP)
    ds.NumberOfFrames = 0
    image = read_image(write(ds, tmp_path / "zero.dcm"))
    assert image.pixels.shape == RAMP.shape
    assert image.normalization.frame_rule == "single frame"
    del ds.NumberOfFrames
    assert number_of_frames(ds) == 1


def test_unknown_transfer_syntax_is_unsupported(tmp_path: Path) -> None:
    ds = native_8bit(RAMP)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 video
    ds.PixelData = encapsulate([b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    assert _reason(write(ds, tmp_path / "mpeg.dcm")) is Reason.UNSUPPORTED_TRANSFER_SYNTAX


def test_no_pixel_data_is_named(tmp_path: Path) -> None:
    ds = native_8bit(RAMP)
    del ds.PixelData
    assert _reason(write(ds, tmp_path / "nopix.dcm")) is Reason.NO_PIXEL_DATA


def test_palette_color_is_unsupported_photometric(tmp_path: Path) -> None:
    ds = set_pixels(native_8bit(RAMP), RAMP, photometric="PALETTE COLOR")
    assert _reason(write(ds, tmp_path / "palette.dcm")) is Reason.UNSUPPORTED_PHOTOMETRIC


def test_dicm_magic_followed_by_garbage_is_rejected_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "junk.dcm"
    path.write_bytes(b"\x00" * 128 + b"DICM" + np.random.default_rng(1).bytes(4000))
    assert _reason(path) in {Reason.NOT_DICOM, Reason.TRUNCATED, Reason.CORRUPT, Reason.TOO_LARGE}


def test_raw_dataset_without_preamble_is_read(tmp_path: Path) -> None:
    path = write(native_8bit(RAMP), tmp_path / "raw.dcm", preamble=False)
    assert path.read_bytes()[128:132] != b"DICM"
    image = read_image(path)
    np.testing.assert_allclose(image.pixels, RAMP.astype(np.float32), atol=1e-3)


def test_rgb_dicom_is_converted_to_grey(tmp_path: Path) -> None:
    rgb = np.zeros((10, 10, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    rgb[:, :5, 1] = 100  # some contrast: a flat image is refused as blank_image
    ds = set_pixels(native_8bit(RAMP), rgb, photometric="RGB")
    image = read_image(write(ds, tmp_path / "rgb.dcm"))
    assert image.pixels[5, 5] == pytest.approx(0.299 * 200, abs=1e-3)
    assert image.normalization.steps[0] == "color:rgb_to_luma"


@pytest.mark.skipif(not jpeg_ls_encoder_available(), reason="no JPEG-LS encoder (pyjpegls)")
def test_missing_codec_names_the_package_to_install(tmp_path: Path) -> None:
    path = write(jpeg_ls_12bit(RAMP), tmp_path / "jls.dcm")
    # A real interpreter in which pylibjpeg and pyjpegls cannot be imported, as on a
    # machine where they were never installed.
    script = (
        "import sys\n"
        "for name in ('pylibjpeg', 'libjpeg', 'jpeg_ls'):\n"
        "    sys.modules[name] = None\n"
        "from pathlib import Path\n"
        "from ingest import IngestError, read_image\n"
        "try:\n"
        f"    read_image(Path({str(path)!r}))\n"
        "except IngestError as err:\n"
        "    print(err.reason.value); print(err.message)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        check=True,
    )
    reason, message = result.stdout.strip().splitlines()[:2]
    assert reason == "missing_codec"
    assert "pylibjpeg-libjpeg" in message or "pyjpegls" in message
