"""Reduction and a grey-level pipeline that is not linear: box the display levels, not values.

A clipping window, SIGMOID, a VOI LUT Sequence or a Modality LUT Sequence do not commute
with averaging stored values: noise and grid lines at the pixel pitch under a narrow
window came out brighter or darker than the full decode shows them (the model's
probability moved by up to 0.09). Each case below is written in every encoding that
reaches the grey levels at full size; the reduced read must be exactly the full read's
display levels averaged over the same blocks, and JPEG 2000 must not reduce before the LUT.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from ingest import read_image
from ingest.greylevels import display_table, lookup, to_display_levels
from ingest.reduced import box_factor, box_mean, reduction_commutes
from tests.ingest.dicom_factory import (
    base_dataset,
    encapsulated,
    jpeg_ls_encoder_available,
    set_pixels,
    window,
    write,
)
from tests.ingest.test_reduced import MIN_SIDE, upscaled

#: Stored value of source grey level g in the 16-bit cases: OFFSET + GAIN * g.
OFFSET, GAIN = 5000, 200


def _noisy16(ref: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = ref.astype(np.float64) * GAIN + OFFSET + rng.normal(0, sigma, ref.shape)
    return np.clip(values, 0, 65535).astype(np.uint16)


def narrow_window_noise(ref: np.ndarray) -> FileDataset:
    """16-bit, noise sigma 1500, a LINEAR window over source levels 90..170 (clips)."""
    ds = set_pixels(base_dataset(*ref.shape), _noisy16(ref, 1500))
    return window(ds, OFFSET + GAIN * 90, OFFSET + GAIN * 170, "LINEAR")


def grid_lines_window(ref: np.ndarray) -> FileDataset:
    """Anti-scatter grid lines at the pixel pitch under a LINEAR_EXACT window that clips."""
    stored = ref.astype(np.int32) * GAIN + OFFSET
    stored[:, ::2] += 6000
    ds = set_pixels(base_dataset(*ref.shape), np.clip(stored, 0, 65535).astype(np.uint16))
    return window(ds, OFFSET + GAIN * 60, OFFSET + GAIN * 200, "LINEAR_EXACT")


def sigmoid_noise(ref: np.ndarray) -> FileDataset:
    ds = set_pixels(base_dataset(*ref.shape), _noisy16(ref, 1500))
    ds.WindowCenter, ds.WindowWidth = str(OFFSET + GAIN * 130), "8000"
    ds.VOILUTFunction = "SIGMOID"
    return ds


def signed_noise_narrow(ref: np.ndarray) -> FileDataset:
    """Signed 16-bit (Pixel Representation 1), noise, a narrow window."""
    rng = np.random.default_rng(1)
    values = ref.astype(np.float64) * 100 - 12000 + rng.normal(0, 800, ref.shape)
    ds = set_pixels(base_dataset(*ref.shape), values.astype(np.int16))
    return window(ds, -12000 + 100 * 80, -12000 + 100 * 180)


def voi_lut_step(ref: np.ndarray) -> FileDataset:
    """A VOI LUT Sequence that is a step at source level 128, over noisy 16-bit values."""
    ds = set_pixels(base_dataset(*ref.shape), _noisy16(ref, 800))
    lut = np.where(np.arange(65536) > OFFSET + GAIN * 128, 65535, 0).astype("<u2")
    item = Dataset()
    item.LUTDescriptor = [0, 0, 16]
    item.LUTData = lut.tobytes()
    item["LUTData"].VR = "OW"
    ds.VOILUTSequence = Sequence([item])
    return ds


def modality_lut_log(ref: np.ndarray) -> FileDataset:
    """12-bit noisy values through a logarithmic Modality LUT Sequence, narrow window."""
    rng = np.random.default_rng(2)
    stored = (ref.astype(np.uint16) * 16 + rng.integers(0, 64, ref.shape)).astype(np.uint16)
    ds = set_pixels(base_dataset(*ref.shape), stored, bits_stored=12)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    lut = np.rint(65535 * np.log1p(np.arange(4096)) / np.log1p(4095)).astype("<u2")
    item.LUTData = lut.tobytes()
    item["LUTData"].VR = "OW"
    item.ModalityLUTType = "OD"
    ds.ModalityLUTSequence = Sequence([item])
    return window(ds, 50000, 62000, "LINEAR")


def percentile_noise(ref: np.ndarray) -> FileDataset:
    """No VOI module: the percentile window, measured on the full frame's values."""
    return set_pixels(base_dataset(*ref.shape), _noisy16(ref, 1500))


CASES: dict[str, Callable[[np.ndarray], FileDataset]] = {
    "percentile_noise": percentile_noise,
    "narrow_window_noise": narrow_window_noise,
    "grid_lines_window": grid_lines_window,
    "sigmoid_noise": sigmoid_noise,
    "signed_noise_narrow": signed_noise_narrow,
    "voi_lut_step": voi_lut_step,
    "modality_lut_log": modality_lut_log,
}


def _native(ds: FileDataset) -> FileDataset:
    return ds


def _rle(ds: FileDataset) -> FileDataset:
    ds.compress(RLELossless)
    return ds


def _jpeg2000(ds: FileDataset) -> FileDataset:
    ds.compress(JPEG2000Lossless)
    return ds


def _jpeg_lossless(ds: FileDataset) -> FileDataset:
    code = imagecodecs.jpeg8_encode(
        ds.pixel_array, lossless=True, predictor=1, bitspersample=int(ds.BitsStored)
    )
    return encapsulated(ds, bytes(code), JPEGLosslessSV1)


def _jpeg_ls(ds: FileDataset) -> FileDataset:
    ds.compress(JPEGLSLossless)
    return ds


ENCODINGS: dict[str, Callable[[FileDataset], FileDataset]] = {
    "native": _native,
    "rle": _rle,
    "jpeg2000": _jpeg2000,
    "jpeg_lossless_sv1": _jpeg_lossless,
    **({"jpeg_ls": _jpeg_ls} if jpeg_ls_encoder_available() else {}),
}
#: Signed data: the encoders here that store it (the fast paths leave it to pydicom).
SIGNED_ENCODINGS = frozenset({"native", "rle"})


def combinations() -> list[tuple[str, str]]:
    return [
        (case, encoding)
        for case in CASES
        for encoding in ENCODINGS
        if not case.startswith("signed") or encoding in SIGNED_ENCODINGS
    ]


def build(case: str, encoding: str, ref: np.ndarray, path: Path) -> Path:
    return write(ENCODINGS[encoding](CASES[case](ref)), path)


@pytest.fixture(scope="module")
def big_reference(source_jpeg: Path) -> np.ndarray:
    return upscaled(source_jpeg)


@pytest.mark.parametrize(
    ("case", "encoding"), combinations(), ids=[f"{c}-{e}" for c, e in combinations()]
)
def test_reduced_read_is_the_full_display_levels_box_averaged(
    case: str, encoding: str, big_reference: np.ndarray, tmp_path: Path
) -> None:
    path = build(case, encoding, big_reference, tmp_path / f"{case}-{encoding}.dcm")
    full = read_image(path)
    reduced = read_image(path, min_side=MIN_SIDE)
    factor = box_factor(min(full.pixels.shape), MIN_SIDE)
    np.testing.assert_allclose(reduced.pixels, box_mean(full.pixels, factor), atol=1e-4)
    decision = reduced.normalization.steps[0]
    assert f"box 1/{factor} after LUT" in decision, decision
    if encoding == "jpeg2000":
        assert decision.startswith("decode:jpeg2000 reduce=0"), decision
    assert reduced.normalization.steps[1:] == full.normalization.steps


def test_jpeg_baseline_under_a_clipping_window_is_not_dct_scaled(
    big_reference: np.ndarray, tmp_path: Path
) -> None:
    """DCT scaling averages stored values as well: only where the pipeline is affine."""
    buffer = io.BytesIO()
    Image.fromarray(big_reference).save(buffer, format="JPEG", quality=95)
    ds = window(set_pixels(base_dataset(*big_reference.shape), big_reference), 90, 170)
    path = write(encapsulated(ds, buffer.getvalue(), JPEGBaseline8Bit), tmp_path / "j.dcm")
    reduced = read_image(path, min_side=MIN_SIDE)
    decision = reduced.normalization.steps[0]
    assert decision.startswith("decode:jpeg dct scale=1/1"), decision
    assert "box 1/4 after LUT" in decision, decision
    full = read_image(path)  # pydicom's JPEG decoder: another IDCT, a rounding step apart
    assert np.abs(reduced.pixels - box_mean(full.pixels, 4)).mean() <= 1.0


@pytest.mark.parametrize(
    ("function", "low", "high", "commutes"),
    [
        ("LINEAR_EXACT", 0, 65535, True),  # covers the stored range: affine
        ("LINEAR", -1000, 70000, True),
        ("LINEAR_EXACT", 1000, 65535, False),  # clips the lowest values
        ("SIGMOID", 0, 65535, False),
    ],
)
def test_reduction_commutes_only_with_an_affine_pipeline(
    function: str, low: float, high: float, commutes: bool
) -> None:
    ds = window(set_pixels(base_dataset(4, 4), np.zeros((4, 4), np.uint16)), low, high, function)
    if function == "SIGMOID":
        ds.WindowCenter, ds.WindowWidth = "32768", "65536"
    assert reduction_commutes(ds, 16) is commutes


def test_a_percentile_window_never_commutes() -> None:
    ds = set_pixels(base_dataset(4, 4), np.zeros((4, 4), np.uint16))
    assert not reduction_commutes(ds, 16)


@pytest.mark.parametrize("case", list(CASES))
def test_the_display_table_is_the_pipeline_pixel_for_pixel(
    case: str, big_reference: np.ndarray
) -> None:
    """Every step is a function of the pixel's value (the percentile bounds of the frame)."""
    ds = CASES[case](big_reference[:700, :500])
    frame = ds.pixel_array
    made = display_table(frame, ds)
    assert made is not None
    table, record = made
    pixels, expected_record = to_display_levels(frame, ds)
    np.testing.assert_array_equal(lookup(table, frame), pixels)
    assert record == expected_record
