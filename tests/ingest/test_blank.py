"""Images that hold no picture are refused as ``blank_image`` before any model sees them.

Found by the red-team review (issue 12): Rescale Slope NaN, inf or 0 and all-black or
all-white images were scored pneumonia/URGENT. Each case is a real file written here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ingest import IngestError, Reason, read_image
from tests.ingest.dicom_factory import (
    base_dataset,
    jpeg_grey,
    native_8bit,
    rescale_window_12bit,
    set_pixels,
    write,
)


def _reason(path: Path) -> tuple[Reason, str]:
    with pytest.raises(IngestError) as caught:
        read_image(path)
    return caught.value.reason, caught.value.message


@pytest.mark.parametrize("slope", ["NaN", "inf", "-inf", "0", "0.0"])
def test_a_rescale_slope_that_is_zero_or_not_finite_is_blank(
    tmp_path: Path, reference: np.ndarray, slope: str
) -> None:
    ds = rescale_window_12bit(reference)
    ds.RescaleSlope = slope
    reason, message = _reason(write(ds, tmp_path / "slope.dcm"))
    assert reason is Reason.BLANK_IMAGE
    assert "(0028,1053) Rescale Slope" in message


def test_a_non_finite_rescale_intercept_is_blank(tmp_path: Path, reference: np.ndarray) -> None:
    ds = rescale_window_12bit(reference)
    ds.RescaleIntercept = "NaN"
    assert _reason(write(ds, tmp_path / "intercept.dcm"))[0] is Reason.BLANK_IMAGE


def test_modality_values_that_overflow_float32_are_blank() -> None:
    """The window would clip +inf to white: the modality values are checked before VOI."""
    from ingest.greylevels import to_display_levels

    ds = rescale_window_12bit(np.full((8, 8), 10, dtype=np.uint8))
    frame = np.arange(64, dtype=np.uint16).reshape(8, 8)
    ds.RescaleSlope = "1e39"  # finite as text, infinite once in float32
    with pytest.raises(IngestError) as caught:
        to_display_levels(frame, ds)
    assert caught.value.reason is Reason.BLANK_IMAGE


@pytest.mark.parametrize("value", [0, 255, 117])
def test_a_constant_dicom_is_blank(tmp_path: Path, value: int) -> None:
    ds = set_pixels(base_dataset(256, 256), np.full((256, 256), value, dtype=np.uint8))
    reason, message = _reason(write(ds, tmp_path / "flat.dcm"))
    assert reason is Reason.BLANK_IMAGE and "flat" in message


def test_a_constant_16_bit_dicom_without_voi_is_blank(tmp_path: Path) -> None:
    """The percentile window of a flat image maps it all to black."""
    ds = set_pixels(base_dataset(128, 128), np.full((128, 128), 3000, dtype=np.uint16))
    ds.BitsStored = 12
    assert _reason(write(ds, tmp_path / "flat16.dcm"))[0] is Reason.BLANK_IMAGE


@pytest.mark.parametrize(
    ("value", "suffix"), [(0, "jpeg"), (255, "jpeg"), (0, "png"), (255, "png")]
)
def test_all_black_or_all_white_rasters_are_blank(tmp_path: Path, value: int, suffix: str) -> None:
    path = tmp_path / f"flat.{suffix}"
    Image.fromarray(np.full((300, 400), value, dtype=np.uint8), mode="L").save(path)
    assert _reason(path)[0] is Reason.BLANK_IMAGE


def test_a_nearly_flat_jpeg_with_noise_below_one_grey_level_is_blank(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    flat = np.full((300, 400), 4, dtype=np.uint8)
    flat[rng.random(flat.shape) < 0.01] = 5  # sensor noise: 1 % of pixels one level up
    path = tmp_path / "dark.png"
    Image.fromarray(flat, mode="L").save(path)
    assert _reason(path)[0] is Reason.BLANK_IMAGE


def test_real_radiographs_are_not_blank(tmp_path: Path, source_jpegs: list[Path]) -> None:
    for n, jpeg in enumerate(source_jpegs):
        assert read_image(jpeg).pixels.std() > 20
        ref = jpeg_grey(jpeg)
        dicom = write(native_8bit(ref), tmp_path / f"{n}.dcm")
        assert read_image(dicom).pixels.std() > 20
        assert (
            read_image(write(rescale_window_12bit(ref), tmp_path / f"{n}r.dcm")).pixels.std() > 20
        )
