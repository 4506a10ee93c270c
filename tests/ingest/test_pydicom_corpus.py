"""pydicom's bundled test files (CT, MR, RT, SR, SEG, truncated, big-endian, odd JPEG
variants...): each is read or rejected with a named reason; none crashes the reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file, get_testdata_files

from ingest import IngestError, Reason, evaluate, read_header, read_image

# Local files only: get_testdata_files never downloads.
CORPUS = sorted(Path(p) for p in get_testdata_files("*") if Path(p).is_file())


def _local(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not installed")
    return Path(str(path))


def test_corpus_is_present() -> None:
    assert len(CORPUS) > 50


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_each_file_is_read_or_rejected_with_a_reason(path: Path) -> None:
    try:
        verdict = evaluate(read_header(path))
    except IngestError as err:
        assert isinstance(err.reason, Reason) and err.message
        return
    assert verdict.eligible == (not verdict.reasons)
    try:
        image = read_image(path)
    except IngestError as err:
        assert isinstance(err.reason, Reason) and err.message
        return
    assert image.pixels.ndim == 2 and image.pixels.dtype == np.float32
    assert 0.0 <= image.pixels.min() <= image.pixels.max() <= 255.0


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("CT_small.dcm", Reason.WRONG_SOP_CLASS),
        ("MR_small.dcm", Reason.WRONG_SOP_CLASS),
        ("rtplan.dcm", Reason.WRONG_SOP_CLASS),
        ("test-SR.dcm", Reason.WRONG_SOP_CLASS),
        ("SC_rgb_rle.dcm", Reason.WRONG_SOP_CLASS),
    ],
)
def test_non_radiographs_are_ineligible_from_the_header(name: str, reason: Reason) -> None:
    verdict = evaluate(read_header(_local(name)))
    assert verdict.reasons[0] is reason


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("MR_truncated.dcm", Reason.TRUNCATED),
        ("rtplan_truncated.dcm", Reason.TRUNCATED),
        ("rtdose.dcm", Reason.MULTI_FRAME),
        ("examples_palette.dcm", Reason.UNSUPPORTED_PHOTOMETRIC),
        ("rtplan.dcm", Reason.NO_PIXEL_DATA),
        ("README.txt", Reason.NOT_AN_IMAGE),
    ],
)
def test_known_broken_or_unusable_files_get_their_reason(name: str, reason: Reason) -> None:
    with pytest.raises(IngestError) as caught:
        read_image(_local(name))
    assert caught.value.reason is reason


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_bigendian.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_implicit.dcm",
    ],
)
def test_mr_small_decodes_identically_in_every_transfer_syntax(name: str) -> None:
    reference = read_image(_local("MR_small.dcm")).pixels
    np.testing.assert_allclose(read_image(_local(name)).pixels, reference, atol=1e-3)


def test_deflated_dataset_is_read() -> None:
    image = read_image(_local("image_dfl.dcm"))
    assert image.pixels.shape == (512, 512)


def test_ct_window_at_a_known_pixel() -> None:
    # CT_small: Rescale Intercept -1024, no window in the file: percentile fallback.
    image = read_image(_local("CT_small.dcm"))
    assert image.normalization.voi_path == "percentile"
    assert image.normalization.steps[0] == "modality_lut:rescale"
