"""The grey-level steps, one by one, against hand-computed values and pydicom's own."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_windowing
from pydicom.sequence import Sequence

from ingest.greylevels import (
    VoiPath,
    choose_voi,
    color_to_luma,
    display_levels,
    modality_lut,
    percentile_window,
    presentation,
    to_display_levels,
    voi_lut_sequence,
    window,
)


def _ds(**attrs: object) -> Dataset:
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation = 16, 12, 0
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


RAMP = np.arange(0, 4096, dtype=np.uint16).reshape(64, 64)


def test_rescale_matches_pydicom_modality_lut() -> None:
    ds = _ds(RescaleSlope="0.5", RescaleIntercept="-1024")
    ours = modality_lut(RAMP, ds)
    assert ours[0, 0] == -1024.0 and ours[63, 63] == pytest.approx(4095 * 0.5 - 1024)
    np.testing.assert_allclose(ours, apply_modality_lut(RAMP, ds), atol=1e-3)


def test_modality_lut_is_identity_without_its_module() -> None:
    assert modality_lut(RAMP, _ds()) is RAMP
    assert modality_lut(RAMP, _ds(RescaleSlope="1", RescaleIntercept="0")) is RAMP


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
@pytest.mark.parametrize(("center", "width"), [(2048.0, 4096.0), (1000.0, 301.0), (300.5, 1.0)])
def test_window_equals_pydicom_windowing_over_its_output_range(
    function: str, center: float, width: float
) -> None:
    ds = _ds(WindowCenter=center, WindowWidth=width, VOILUTFunction=function)
    if function != "LINEAR" and width <= 1.0:
        width = 2.0
        ds.WindowWidth = width
    ours, _ = window(RAMP, ds)
    expected = apply_windowing(RAMP, ds) / 4095.0  # pydicom maps onto 0..2^12-1
    np.testing.assert_allclose(ours, expected, atol=2e-5)


def test_linear_window_values_at_known_pixels() -> None:
    ds = _ds(WindowCenter="1000", WindowWidth="201")
    ours, described = window(RAMP, ds)
    flat = ours.ravel()
    # PS3.3 C.11.2.1.2.1: x <= c - 0.5 - (w-1)/2 = 899.5 -> 0; x > 1099.5 -> 1.
    assert flat[899] == 0.0 and flat[1100] == 1.0
    assert flat[1000] == pytest.approx((1000 - 999.5) / 200 + 0.5)
    assert described == "window LINEAR c=1000 w=201"


def test_first_of_several_windows_is_used() -> None:
    ds = _ds(WindowCenter=[1000, 40], WindowWidth=[201, 80])
    ours, _ = window(RAMP, ds)
    assert ours.ravel()[1000] == pytest.approx(0.5 / 200 + 0.5)


def _voi_lut(entries: int, first: int, bits: int, data: np.ndarray) -> Sequence:
    item = Dataset()
    item.LUTDescriptor = [entries, first, bits]
    item.LUTData = data.tolist()
    item["LUTData"].VR = "US"
    return Sequence([item])


def test_voi_lut_sequence_is_preferred_over_window() -> None:
    lut = (np.arange(4096) // 16).astype(np.uint16)  # 8-bit entries, 4096 of them
    ds = _ds(WindowCenter="10", WindowWidth="2", VOILUTSequence=_voi_lut(4096, 0, 8, lut))
    assert choose_voi(ds).path is VoiPath.VOI_LUT_SEQUENCE
    pixels, record = to_display_levels(RAMP, ds)
    assert record.voi_path == "voi_lut_sequence"
    # 8-bit entries above input 255 (pydicom's apply_voi wraps these through uint8).
    assert pixels.ravel()[4000] == pytest.approx(250.0)
    assert pixels.ravel()[160] == pytest.approx(10.0)


def test_voi_lut_clamps_inputs_outside_its_entries() -> None:
    lut = np.linspace(0, 65535, 100).astype(np.uint16)
    ds = _ds(VOILUTSequence=_voi_lut(100, 50, 16, lut))
    out, _ = voi_lut_sequence(RAMP, ds)
    flat = out.ravel()
    assert flat[0] == 0.0 and flat[50] == 0.0  # below first mapped -> first entry
    assert flat[149] == 1.0 and flat[4095] == 1.0  # past the last entry -> last entry


def test_voi_lut_declared_16_bits_with_12_bit_entries_is_not_shown_black() -> None:
    lut = np.arange(4096, dtype=np.uint16)  # entries never pass 4095
    ds = _ds(VOILUTSequence=_voi_lut(4096, 0, 16, lut))
    out, described = voi_lut_sequence(RAMP, ds)
    assert out.max() == pytest.approx(1.0)
    assert "entries use 12 bits" in described


def test_broken_window_falls_back_to_percentile_with_a_note() -> None:
    ds = _ds(WindowCenter="100", WindowWidth="0.5")  # below 1 for LINEAR
    choice = choose_voi(ds)
    assert choice.path is VoiPath.PERCENTILE
    assert "below 1" in choice.notes[0]


def test_percentile_window_ignores_outliers() -> None:
    arr = np.full((100, 100), 1000.0)
    arr[:50] = 2000.0
    arr[0, :10] = 65535.0  # burned-in marker: 0.1 % of pixels
    out, _ = percentile_window(arr)
    assert out[10, 10] == 1.0 and out[90, 90] == 0.0


def test_eight_bit_without_voi_keeps_its_stored_range() -> None:
    arr = np.array([[10, 200]], dtype=np.uint8)
    ds = _ds(BitsStored=8)
    pixels, record = to_display_levels(arr, ds)
    assert record.voi_path == "stored_range"
    np.testing.assert_allclose(pixels, [[10.0, 200.0]], atol=1e-4)


def test_monochrome1_is_inverted_after_voi() -> None:
    # Window over 0..1000: stored 0 is VOI output 0, shown white on MONOCHROME1.
    ds = _ds(
        PhotometricInterpretation="MONOCHROME1",
        WindowCenter="500",
        WindowWidth="1000",
        VOILUTFunction="LINEAR_EXACT",
    )
    pixels, record = to_display_levels(RAMP, ds)
    flat = pixels.ravel()
    assert flat[0] == pytest.approx(255.0)  # below the window: white
    assert flat[1000] == pytest.approx(0.0)  # top of the window: black
    assert flat[4095] == pytest.approx(0.0)  # above the window stays black, not inverted back
    assert flat[250] == pytest.approx(255.0 * 0.75)
    assert record.inverted and "presentation:monochrome1_inverted" in record.steps


def test_monochrome1_with_inverse_shape_is_inverted_once() -> None:
    ds = _ds(PhotometricInterpretation="MONOCHROME1", PresentationLUTShape="INVERSE")
    unit = np.array([[0.0, 0.25]], dtype=np.float32)
    np.testing.assert_allclose(presentation(unit, ds), [[1.0, 0.75]])


def test_monochrome2_with_identity_shape_is_not_inverted() -> None:
    ds = _ds(PresentationLUTShape="IDENTITY")
    unit = np.array([[0.0, 0.25]], dtype=np.float32)
    assert presentation(unit, ds) is unit


def test_rgb_becomes_bt601_luma() -> None:
    rgb = np.zeros((1, 3, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[0, 1] = (0, 255, 0)
    rgb[0, 2] = (100, 100, 100)
    luma = color_to_luma(rgb, _ds(PhotometricInterpretation="RGB"))
    np.testing.assert_allclose(luma, [[0.299 * 255, 0.587 * 255, 100.0]], rtol=1e-5)


def test_display_levels_are_float32_0_to_255() -> None:
    out = display_levels(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.0, 127.5, 255.0]])
