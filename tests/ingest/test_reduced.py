"""The reduced-resolution decode: same grey levels, same model input, a recorded decision.

Every encoding of the corpus is written from a real chest X-ray upscaled to detector size
(the dataset's JPEGs are about 384 px, too small for any reduction to apply), then read in
full and with ``min_side`` = twice the model input. Where no reduction applies the two
must be identical pixel for pixel (a faster decoder may not change a value); where one
applies, the 192 x 192 model input built from each must agree (mean |diff| <= 1 grey level,
the model's probability within 0.02: tests/ingest/test_reduced_model.py).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import FileDataset
from pydicom.encaps import get_frame
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, JPEGLosslessSV1

from ingest import IngestError, read_image
from ingest.dicom import decodable_transfer_syntaxes
from ingest.reduced import (
    FAST_DECODERS,
    box_factor,
    box_mean,
    dct_scale,
    decode_for_model,
    reduction_levels,
)
from model.preprocess import preprocess
from tests.ingest.dicom_factory import (
    VARIANTS,
    base_dataset,
    encapsulated,
    jpeg_grey,
    jpeg_ls_encoder_available,
    set_pixels,
    write,
)

MODEL_INPUT = 192
MIN_SIDE = 2 * MODEL_INPUT
#: Detector-like size (rows, columns): JPEG 2000 reduce = 2, DCT scale 1/4 for min_side 384.
DETECTOR_SHAPE = (1800, 1600)
#: Mean |diff| of the 192 x 192 model input, in its 8-bit grey levels: the JPEG 2000 low-pass
#: band is not quite the bilinear filter's average (about 1.5 measured on the test corpus).
MODEL_INPUT_MEAN_ABS = 2.0
#: Lossy encodings decoded by another IDCT may differ by a rounding step (of 255).
LOSSY = frozenset({"jpeg_extended_12bit", "jpeg_baseline_8bit"})
#: What each reducible encoding must record as its decision.
EXPECTED_METHOD = {
    "jpeg2000_16bit": "decode:jpeg2000 reduce=2",
    "htj2k_16bit": "decode:jpeg2000 reduce=2",
    "jpeg_baseline_8bit": "decode:jpeg dct scale=1/4",
    "jpeg_ls_12bit": "decode:jpeg-ls full (charls)",
    "jpeg_lossless_sv1_12bit": "decode:jpeg full (libjpeg-turbo)",
    "jpeg_lossless_p14_16bit": "decode:jpeg full (libjpeg-turbo)",
    "jpeg_extended_12bit": "decode:jpeg full (libjpeg-turbo)",
    "native_8bit": "decode:full (pydicom)",
    "rle_16bit": "decode:full (pydicom)",
    "signed_16bit": "decode:full (pydicom)",
}


def upscaled(source: Path) -> np.ndarray:
    rows, columns = DETECTOR_SHAPE
    with Image.fromarray(jpeg_grey(source)) as image:
        return np.asarray(image.resize((columns, rows), Image.Resampling.BICUBIC))


def jpeg_baseline_8bit(ref: np.ndarray) -> FileDataset:
    """JPEG Baseline (.50) of the upscaled image at quality 95, as a modality would send."""
    buffer = io.BytesIO()
    Image.fromarray(ref).save(buffer, format="JPEG", quality=95)
    return encapsulated(
        set_pixels(base_dataset(*ref.shape), ref), buffer.getvalue(), JPEGBaseline8Bit
    )


def corpus() -> list[tuple[str, Callable[[np.ndarray], FileDataset]]]:
    variants = [(v.name, v.build) for v in VARIANTS if v.preamble]
    if not jpeg_ls_encoder_available():
        variants = [(n, b) for n, b in variants if n != "jpeg_ls_12bit"]
    return [*variants, ("jpeg_baseline_8bit", jpeg_baseline_8bit)]


@pytest.fixture(scope="module")
def big_reference(source_jpeg: Path) -> np.ndarray:
    return upscaled(source_jpeg)


@pytest.mark.parametrize(("name", "build"), corpus(), ids=[n for n, _ in corpus()])
def test_reduced_path_gives_the_same_model_input(
    name: str,
    build: Callable[[np.ndarray], FileDataset],
    big_reference: np.ndarray,
    tmp_path: Path,
) -> None:
    path = write(build(big_reference), tmp_path / f"{name}.dcm")
    full = read_image(path)
    reduced = read_image(path, min_side=MIN_SIDE)
    decision = reduced.normalization.steps[0]
    assert decision.startswith("decode:")
    if name in EXPECTED_METHOD:
        assert decision.startswith(EXPECTED_METHOD[name]), decision
    # The grey-level pipeline after the decision is the full path's, step for step (the
    # percentile window's bounds are measured on the pixels, so only their names compare).
    assert _names(reduced.normalization.steps[1:]) == _names(full.normalization.steps)
    assert reduced.normalization.inverted == full.normalization.inverted
    assert reduced.normalization.voi_path == full.normalization.voi_path
    assert min(reduced.pixels.shape) >= MIN_SIDE
    if reduced.pixels.shape == full.pixels.shape and name not in LOSSY:
        np.testing.assert_array_equal(reduced.pixels, full.pixels)
    else:
        if reduced.pixels.shape != full.pixels.shape:
            assert reduced.pixels.size * 4 <= full.pixels.size, "reduced, not by 1/2 per side"
        difference = np.abs(
            _model_grey(reduced.pixels).astype(np.float64) - _model_grey(full.pixels)
        )
        assert difference.mean() <= MODEL_INPUT_MEAN_ABS, f"{difference.mean():.3f}"


def test_odd_sized_jpeg2000_uses_the_levels_pillow_sizes_right(
    big_reference: np.ndarray, tmp_path: Path
) -> None:
    """1,705 rows: Pillow rounds 1705 / 4 down, OpenJPEG up; reduce = 1 is used instead."""
    ref = np.ascontiguousarray(big_reference[:1705, :])
    ds = set_pixels(base_dataset(*ref.shape), ref)
    ds.compress(JPEG2000Lossless)
    path = write(ds, tmp_path / "odd.dcm")
    image = read_image(path, min_side=MIN_SIDE)
    decision = image.normalization.steps[0]
    assert decision.startswith("decode:jpeg2000 reduce=1"), decision
    assert "box 1/2 after LUT (853x800 -> 426x400)" in decision, decision  # the rest after
    assert image.pixels.shape == (426, 400)
    full = read_image(path)
    difference = np.abs(_model_grey(image.pixels) - _model_grey(full.pixels))
    assert difference.mean() <= MODEL_INPUT_MEAN_ABS


def test_full_resolution_is_kept_without_min_side(
    big_reference: np.ndarray, tmp_path: Path
) -> None:
    ds = set_pixels(base_dataset(*big_reference.shape), big_reference)
    ds.compress(JPEG2000Lossless)
    image = read_image(write(ds, tmp_path / "j2k.dcm"))
    assert image.pixels.shape == big_reference.shape
    assert not any(step.startswith("decode:") for step in image.normalization.steps)


def test_no_reduction_below_min_side(source_jpeg: Path, tmp_path: Path) -> None:
    """A 384 x 341 JPEG 2000 is decoded in full: halving it would go below 384 px."""
    ref = jpeg_grey(source_jpeg)
    ds = set_pixels(base_dataset(*ref.shape), ref)
    ds.compress(JPEG2000Lossless)
    path = write(ds, tmp_path / "small.dcm")
    image = read_image(path, min_side=MIN_SIDE)
    assert image.normalization.steps[0].startswith("decode:jpeg2000 reduce=0")
    np.testing.assert_array_equal(image.pixels, read_image(path).pixels)


def test_codestream_disagreeing_with_header_falls_back_to_pydicom(
    big_reference: np.ndarray, tmp_path: Path
) -> None:
    """A codestream whose size is not (0028,0010) x (0028,0011) is not trusted by the fast path."""
    ds = set_pixels(base_dataset(*big_reference.shape), big_reference)
    ds.compress(JPEG2000Lossless)
    ds.Rows = big_reference.shape[0] - 8  # header says smaller than the codestream
    path = write(ds, tmp_path / "mismatch.dcm")
    try:
        image = read_image(path, min_side=MIN_SIDE)
    except IngestError:
        return  # pydicom refused it: a named rejection is the right outcome as well
    assert image.normalization.steps[0] == "decode:full (pydicom)"


@pytest.mark.parametrize("cut", [0.05, 0.5, 0.95])
@pytest.mark.parametrize(
    "name", ["jpeg2000_16bit", "jpeg_lossless_sv1_12bit", "jpeg_baseline_8bit"]
)
def test_truncated_codestream_is_a_named_rejection_or_an_image(
    name: str, cut: float, big_reference: np.ndarray, tmp_path: Path
) -> None:
    """Hostile input: the fast decoders see a codestream cut short; no other exception escapes."""
    build = dict(corpus())[name]
    ds = build(big_reference)
    path = write(ds, tmp_path / "whole.dcm")
    ds = dcmread(path)
    from pydicom.encaps import get_frame

    codestream = get_frame(ds.PixelData, 0, number_of_frames=1)
    cut_ds = encapsulated(
        ds, codestream[: int(len(codestream) * cut)], ds.file_meta.TransferSyntaxUID
    )
    try:
        image = read_image(write(cut_ds, tmp_path / "cut.dcm"), min_side=MIN_SIDE)
    except IngestError as error:
        assert error.reason.value in {"corrupt", "truncated"}
    else:
        assert image.pixels.ndim == 2  # some decoders fill a cut stream with grey


def test_every_compressed_syntax_decoded_here_but_rle_has_a_fast_decoder() -> None:
    """The table is pydicom's decoder table for the JPEG family, not a subset of it."""
    compressed = {uid for uid in decodable_transfer_syntaxes() if uid.is_compressed}
    assert set(FAST_DECODERS) == compressed - {"1.2.840.10008.1.2.5"}  # RLE: pydicom's own


@pytest.mark.parametrize(
    "extra",
    [b"\xff\xd0", b"\x00\x12", b"\xff\xff\xff", b"\xff\xfe\x00\x00"],
    ids=["RST0", "stray bytes", "fill bytes", "a COM of length 0"],
)
def test_the_fast_path_reads_the_frame_header_the_guard_reads(
    extra: bytes, big_reference: np.ndarray, tmp_path: Path
) -> None:
    """Markers the decoders read past (and the guard measured through) no longer send the
    fast path's own, stricter walk to a full pydicom decode: same decision, same pixels."""
    plain = jpeg_baseline_8bit(big_reference)
    codestream = get_frame(plain.PixelData, 0, number_of_frames=1)
    at = codestream.index(b"\xff\xc0")
    padded = encapsulated(
        jpeg_baseline_8bit(big_reference),
        codestream[:at] + extra + codestream[at:],
        JPEGBaseline8Bit,
    )
    expected = read_image(write(plain, tmp_path / "plain.dcm"), min_side=MIN_SIDE)
    image = read_image(write(padded, tmp_path / "padded.dcm"), min_side=MIN_SIDE)
    assert image.normalization.steps[0] == expected.normalization.steps[0]
    assert image.normalization.steps[0].startswith("decode:jpeg dct scale=1/4")
    np.testing.assert_array_equal(image.pixels, expected.pixels)


def test_a_codestream_not_of_its_transfer_syntax_s_process_goes_to_pydicom(
    big_reference: np.ndarray, tmp_path: Path
) -> None:
    """A lossless (SOF3) stream labelled JPEG Baseline: the DCT fast path does not decode
    it as if it were baseline; pydicom decodes what it is, and the values are those of the
    same stream under its own transfer syntax (lossless SV1: libjpeg-turbo, then the box)."""
    stream = bytes(imagecodecs.jpeg8_encode(big_reference, lossless=True, predictor=1))
    images = {}
    for uid in (JPEGBaseline8Bit, JPEGLosslessSV1):
        ds = encapsulated(
            set_pixels(base_dataset(*big_reference.shape), big_reference), stream, uid
        )
        images[uid] = read_image(write(ds, tmp_path / f"{uid}.dcm"), min_side=MIN_SIDE)
    mislabelled, labelled = images[JPEGBaseline8Bit], images[JPEGLosslessSV1]
    assert mislabelled.normalization.steps[0].startswith("decode:full (pydicom)")
    assert labelled.normalization.steps[0].startswith("decode:jpeg full (libjpeg-turbo)")
    np.testing.assert_array_equal(mislabelled.pixels, labelled.pixels)


def test_garbage_codestream_is_a_named_rejection(big_reference: np.ndarray, tmp_path: Path) -> None:
    ds = set_pixels(base_dataset(*big_reference.shape), big_reference)
    garbage = b"\xff\x4f\xff\x51" + bytes(range(256)) * 40
    bad = encapsulated(ds, garbage, JPEG2000Lossless)
    with pytest.raises(IngestError) as caught:
        decode_for_model(dcmread(write(bad, tmp_path / "garbage.dcm")), MIN_SIDE)
    assert caught.value.reason.value == "corrupt"


@pytest.mark.parametrize(
    ("shorter", "available", "expected"),
    [
        (2000, 5, 2),
        (1535, 5, 2),
        (1532, 5, 1),
        (383, 5, 0),
        (2000, 1, 1),
        (4000, 5, 3),
        (767, 5, 1),
        (766, 5, 0),
    ],
)
def test_reduction_levels(shorter: int, available: int, expected: int) -> None:
    assert reduction_levels(shorter, MIN_SIDE, available) == expected


@pytest.mark.parametrize(
    ("shorter", "expected"), [(2000, 4), (3500, 8), (1000, 2), (500, 1), (3072, 8), (3064, 4)]
)
def test_dct_scale(shorter: int, expected: int) -> None:
    assert dct_scale(shorter, MIN_SIDE) == expected


@pytest.mark.parametrize(
    ("shorter", "expected"), [(2000, 5), (1600, 4), (767, 1), (768, 2), (383, 1)]
)
def test_box_factor(shorter: int, expected: int) -> None:
    assert box_factor(shorter, MIN_SIDE) == expected


def test_box_mean_is_the_block_mean() -> None:
    rng = np.random.default_rng(3)
    frame = rng.uniform(0, 255, size=(23, 17)).astype(np.float32)
    expected = frame[:21, :15].astype(np.float64).reshape(7, 3, 5, 3).mean(axis=(1, 3))
    out = box_mean(frame, 3)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_full_size_decoders_are_box_reduced(big_reference: np.ndarray, tmp_path: Path) -> None:
    """Native pixels (no codec reduction): display levels averaged 1/4 per side, recorded."""
    path = write(set_pixels(base_dataset(*big_reference.shape), big_reference), tmp_path / "n.dcm")
    image = read_image(path, min_side=MIN_SIDE)
    assert image.normalization.steps[0] == (
        "decode:full (pydicom), box 1/4 after LUT (1800x1600 -> 450x400)"
    )
    assert image.pixels.shape == (450, 400)
    np.testing.assert_allclose(image.pixels, box_mean(read_image(path).pixels, 4), atol=1e-4)


def _model_grey(pixels: np.ndarray) -> np.ndarray:
    return preprocess(pixels, MODEL_INPUT)[..., 0] * 255.0


def _names(steps: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(step.split(" [")[0] for step in steps)
