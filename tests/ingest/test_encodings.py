"""Every encoding of a real chest X-ray normalizes back to the source JPEG's grey levels.

Tolerance (stated by the issue): for lossless encodings the mean absolute difference to
the source JPEG's 8-bit pixels is at most 1 grey level and the maximum at most 2; for the
lossy 12-bit JPEG Extended variant at most 1.5 and 12.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ingest import SourceKind, read_header, read_image
from tests.ingest.dicom_factory import (
    LOSSLESS_MAX_ABS,
    LOSSLESS_MEAN_ABS,
    LOSSY_MAX_ABS,
    LOSSY_MEAN_ABS,
    VARIANTS,
    Variant,
    jpeg_baseline_source_bytes,
    jpeg_grey,
    jpeg_ls_encoder_available,
    write,
)


def _assert_matches(pixels: np.ndarray, ref: np.ndarray, mean_abs: float, max_abs: float) -> None:
    assert pixels.shape == ref.shape
    diff = np.abs(pixels.astype(np.float64) - ref.astype(np.float64))
    assert diff.mean() <= mean_abs, f"mean |diff| {diff.mean():.3f}"
    assert diff.max() <= max_abs, f"max |diff| {diff.max():.3f}"


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_variant_normalizes_to_source_jpeg(
    variant: Variant, source_jpegs: list[Path], tmp_path: Path
) -> None:
    if variant.name == "jpeg_ls_12bit" and not jpeg_ls_encoder_available():
        pytest.skip("no JPEG-LS encoder: install the dev extra (pyjpegls)")
    for index, source in enumerate(source_jpegs):
        ref = jpeg_grey(source)
        path = write(
            variant.build(ref), tmp_path / f"{variant.name}-{index}.dcm", preamble=variant.preamble
        )
        image = read_image(path)
        assert image.metadata.kind is SourceKind.DICOM
        if variant.lossless:
            _assert_matches(image.pixels, ref, LOSSLESS_MEAN_ABS, LOSSLESS_MAX_ABS)
        else:
            _assert_matches(image.pixels, ref, LOSSY_MEAN_ABS, LOSSY_MAX_ABS)


def test_jpeg_baseline_in_dicom_matches_the_same_jpeg_file(
    source_jpeg: Path, tmp_path: Path
) -> None:
    ref = jpeg_grey(source_jpeg)
    path = write(jpeg_baseline_source_bytes(source_jpeg)(ref), tmp_path / "baseline.dcm")
    image = read_image(path)
    # Same bytes, two decoders (pylibjpeg-libjpeg vs Pillow's libjpeg-turbo): IDCT rounding.
    _assert_matches(image.pixels, ref, LOSSLESS_MEAN_ABS, LOSSLESS_MAX_ABS)


def test_source_jpeg_itself_reads_as_its_pixels(source_jpeg: Path) -> None:
    image = read_image(source_jpeg)
    assert image.metadata.kind is SourceKind.JPEG
    assert image.normalization.voi_path == "none (8-bit raster)"
    np.testing.assert_array_equal(image.pixels, jpeg_grey(source_jpeg).astype(np.float32))


@pytest.mark.parametrize(
    ("variant_name", "voi_path", "inverted"),
    [
        ("native_8bit", "stored_range", False),
        ("monochrome1_8bit", "stored_range", True),
        ("rescale_window_12bit", "window", False),
        ("inverse_shape_monochrome1", "window", True),
        ("inverse_shape_monochrome2", "window", True),
        ("voi_lut_nonlinear", "voi_lut_sequence", False),
    ],
)
def test_normalization_records_the_path_taken(
    variant_name: str, voi_path: str, inverted: bool, reference: np.ndarray, tmp_path: Path
) -> None:
    variant = next(v for v in VARIANTS if v.name == variant_name)
    image = read_image(write(variant.build(reference), tmp_path / "v.dcm"))
    assert image.normalization.voi_path == voi_path
    assert image.normalization.inverted is inverted
    assert image.normalization.steps[-1] == "scale:0-255"


def test_header_of_compressed_file_names_its_transfer_syntax(
    reference: np.ndarray, tmp_path: Path
) -> None:
    variant = next(v for v in VARIANTS if v.name == "jpeg_lossless_sv1_12bit")
    metadata = read_header(write(variant.build(reference), tmp_path / "sv1.dcm"))
    assert metadata.transfer_syntax_uid == "1.2.840.10008.1.2.4.70"
