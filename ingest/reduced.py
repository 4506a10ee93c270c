"""Decoding only the pixels the model needs: the cheapest decode per transfer syntax.

The network looks at a 192 x 192 squash of the image, yet a 2,500 x 2,000 JPEG 2000
radiograph costs about a second to decode in full on one core. Some codecs can decode at
a reduced resolution for a fraction of that, and for those that cannot, decoders differ
several-fold in speed. :func:`decode_for_model` decides per file, from the header and the
codestream's own markers, and returns the stored values plus a one-line record of the
decision (kept in ``Normalization.steps``, so a reviewer can see which path ran):

=========================================  ============================================
transfer syntax                            decode
=========================================  ============================================
JPEG 2000 / HTJ2K (.90 .91 .201-.203)      OpenJPEG (Pillow) at ``reduce = r``: the
                                           wavelet's low-pass band, 1/2^r per side
JPEG Baseline / Extended, 8-bit (.50 .51)  libjpeg-turbo (Pillow ``draft``): DCT scaling
                                           to 1/2, 1/4 or 1/8 per side
JPEG Lossless (.57 .70), 12-bit Extended   libjpeg-turbo 3 (imagecodecs), full size
JPEG-LS (.80 .81)                          CharLS (imagecodecs), full size
native, RLE, deflated, anything else       pydicom's pixel backend, full size
=========================================  ============================================

Measured for JPEG Lossless SV1 16-bit, 2,500 x 2,000, one core: imagecodecs'
``jpeg8_decode`` (libjpeg-turbo 3) 23 ms, ``ljpeg_decode`` 39 ms, ``jpegsof3_decode``
60 ms, pylibjpeg-libjpeg (pydicom's default plugin) 131 ms; GDCM is not installed.

``r`` (or the DCT scale) is the largest that keeps the shorter side at or above
``min_side`` (twice the model's input: the antialiased resize then sees the same
frequencies it saw in training). Both are a low-pass filter and a subsample of the
*stored values*, before the grey-level pipeline, so they are used only where that
pipeline is affine over the stored range (:func:`reduction_commutes`): a window covering
the range, the stored range itself, a linear LUT. Under a window that clips, SIGMOID, a
curved LUT or a percentile window the codec decodes in full (reduce = 0, DCT scale 1):
measured on the review's films (1,800 x 1,600, 16-bit, noise or grid lines), reduce = 2
before the LUT moved the model's probability by up to 0.08, reduce = 1 by up to 0.07, and
reduce = 0 with the box below by at most 0.008, for 450 ms instead of 30 ms per film.

A frame still larger than needed (every full-size decode) is averaged over ``f x f``
blocks of its *display levels*, after the modality LUT, VOI and presentation steps
(:func:`display_levels_for_model`): for integer grey data of <= 16 bits the pipeline runs
once over every stored value and the frame is looked up in that table (under 1 ms, then
about 9 ms for 5 Mpx against 9-23 ms for the pipeline over them, one core), identical to
the full path pixel for pixel. The probability
agrees with the full decode within 0.02 (tests/ingest/test_reduced_model.py).

The decoders are a table keyed by transfer syntax (:data:`FAST_DECODERS`, as pydicom keeps
one decoder per transfer syntax in ``pydicom.pixels.decoders``); each says which frame
headers it decodes. The codestream's frame header (size, components, precision, sign,
JPEG 2000 levels) comes from :func:`ingest.codestream.read_frame_header`, the reader the
bomb guard uses too, so the decode chosen here is sized by the bytes the guard measured.
The fast paths cover the common case only: one sample per pixel, unsigned, and a
codestream whose size and precision match (0028,0010/0011/0101). Anything else, and any
error of a fast decoder, falls back to :func:`ingest.dicom.decode_frame`, which names
the reason when the pixels really are broken. Full resolution (``read_image`` without
``min_side``) is what training, the web viewer and the tests of grey levels use.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
)
from pydicom.uid import JPEGLossless as JPEGLosslessP14

from ingest.codestream import CodestreamError, FrameHeader, read_frame_header
from ingest.dicom import check_decodable, decode_frame, transfer_syntax
from ingest.errors import LIBRARY_ERRORS, IngestError
from ingest.greylevels import (
    VoiPath,
    choose_voi,
    display_table,
    lookup,
    photometric_interpretation,
    to_display_levels,
)
from ingest.image import Normalization
from ingest.limits import MAX_PIXELS

try:  # a runtime dependency; tolerated missing so a slim install still decodes via pydicom
    import imagecodecs
except ImportError:  # pragma: no cover - exercised only where imagecodecs is absent
    imagecodecs = None  # type: ignore[assignment]

#: The DCT scales libjpeg offers through Pillow's ``draft`` (1/1, 1/2, 1/4, 1/8 per side).
_DCT_SCALES = (8, 4, 2, 1)
_GREY = frozenset({"MONOCHROME1", "MONOCHROME2"})
#: Largest distance (display grey levels of 255) from a straight line at which the
#: grey-level pipeline still counts as affine for :func:`reduction_commutes`.
AFFINE_TOLERANCE = 0.5


def decode_for_model(
    ds: Dataset, min_side: int, max_pixels: int = MAX_PIXELS
) -> tuple[np.ndarray, str]:
    """Decode the one frame of ``ds`` at the smallest size whose shorter side >= ``min_side``.

    Returns the stored values (``(rows', cols')``, as :func:`ingest.dicom.decode_frame`
    returns them but possibly reduced by the codec) and the decision, e.g.
    ``"decode:jpeg2000 reduce=2 (2500x2000 -> 625x500)"``. A codec reduces only where the
    grey-level pipeline is affine over the stored range (:func:`reduction_commutes`);
    what is still larger than needed is box-averaged after the grey levels
    (:func:`display_levels_for_model`).
    """
    check_decodable(ds, max_pixels)
    uid = transfer_syntax(ds)
    rows, columns = int(ds.Rows), int(ds.Columns)
    decoder = None if uid is None else FAST_DECODERS.get(uid)
    if decoder is not None and _fast_path_applies(ds):
        try:
            result = _fast_decode(decoder, ds, rows, columns, min_side)
        except (*LIBRARY_ERRORS, OSError, SyntaxError, Image.DecompressionBombError):
            result = None  # a broken codestream: pydicom's decoder names the reason below
        if result is not None:
            frame, method = result
            if frame.shape == (rows, columns):
                return frame, f"decode:{method}"
            return frame, f"decode:{method} ({rows}x{columns} -> {frame.shape[0]}x{frame.shape[1]})"
    return decode_frame(ds, max_pixels), "decode:full (pydicom)"


def display_levels_for_model(
    frame: np.ndarray, ds: Dataset, min_side: int, decision: str
) -> tuple[np.ndarray, Normalization]:
    """Display grey levels of a decoded frame, box-averaged down to ``min_side`` if it allows.

    The box mean is taken of the display levels, *after* the modality LUT, VOI and
    presentation steps: a window that clips, a SIGMOID or a LUT does not commute with an
    average of stored values (grid lines at the pixel pitch under a narrow window moved
    the model's probability by 0.09). For integer grey frames of <= 16 bits the pipeline
    runs once over every stored value and the frame is looked up in that table
    (:func:`ingest.greylevels.display_table`), identical pixel for pixel to the full
    path; otherwise the full path runs on the whole frame. ``decision`` (from
    :func:`decode_for_model`) is recorded first in the steps, with the box appended.
    """
    factor = box_factor(min(frame.shape[:2]), min_side)
    made = display_table(frame, ds) if factor >= 2 else None
    if made is None:
        pixels, record = to_display_levels(frame, ds)
        after = "grey levels"
    else:
        table, record = made
        pixels = lookup(table, frame)
        after = "LUT"
    if factor >= 2:
        rows, columns = frame.shape[:2]
        pixels = box_mean(pixels, factor)
        decision += f", box 1/{factor} after {after} ({rows}x{columns} -> "
        decision += f"{pixels.shape[0]}x{pixels.shape[1]})"
    return pixels, replace(record, steps=(decision, *record.steps))


def reduction_commutes(ds: Dataset, precision: int) -> bool:
    """The grey-level pipeline is affine over stored values ``0 .. 2^precision - 1``.

    Only then may a codec average stored values before the pipeline (JPEG 2000's
    low-pass band, DCT scaling) and give what averaging the display levels gives: a
    window that covers the stored range, the stored range itself, a linear LUT. A window
    that clips, SIGMOID, a curved LUT, and a percentile window (measured on the pixels,
    which the reduced decode changes) do not commute; within half a grey level is affine.
    """
    if choose_voi(ds).path is VoiPath.PERCENTILE or not 1 <= precision <= 16:
        return False
    values = np.arange(1 << precision, dtype=np.uint16 if precision > 8 else np.uint8)
    try:
        made = display_table(values.reshape(1, -1), ds)
    except (*LIBRARY_ERRORS, IngestError):
        return False  # the full path names the problem
    if made is None:
        return False
    table = made[0][: values.size].astype(np.float64)
    line = np.linspace(table[0], table[-1], table.size)
    return bool(np.abs(table - line).max() <= AFFINE_TOLERANCE)


def box_factor(shorter_side: int, min_side: int) -> int:
    """Largest integer ``f`` with ``shorter_side // f >= min_side`` (1 when none)."""
    return max(1, shorter_side // max(min_side, 1))


def box_mean(frame: np.ndarray, factor: int) -> np.ndarray:
    """Mean of each ``factor x factor`` block of a 2-D float32 frame, float32.

    The last ``rows % factor`` rows and ``columns % factor`` columns (under ``factor``
    pixels at the bottom and right edge) are dropped. Summed row by row and column by
    column (strided adds: a few ms for 5 Mpx on one core, where
    ``reshape(...).mean(axis=(1, 3))`` takes 12 ms).
    """
    rows, columns = frame.shape[0] // factor, frame.shape[1] // factor
    blocks = frame[: rows * factor, : columns * factor].reshape(rows, factor, columns * factor)
    summed = blocks[:, 0].astype(np.float32)
    for i in range(1, factor):
        summed += blocks[:, i]
    across = summed.reshape(rows, columns, factor)
    total = across[..., 0].copy()
    for i in range(1, factor):
        total += across[..., i]
    total *= np.float32(1.0 / (factor * factor))
    return total


def _fast_path_applies(ds: Dataset) -> bool:
    return (
        int(ds.get("SamplesPerPixel", 1) or 1) == 1
        and int(ds.get("PixelRepresentation", 0) or 0) == 0
        and photometric_interpretation(ds) in _GREY
    )


def _fast_decode(
    decoder: FastDecoder, ds: Dataset, rows: int, columns: int, min_side: int
) -> tuple[np.ndarray, str] | None:
    """``decoder`` on the frame of ``ds``, or None when it does not apply to this codestream."""
    codestream = get_frame(ds.PixelData, 0, number_of_frames=1)
    try:
        header = read_frame_header(codestream)
    except CodestreamError:
        return None  # check_decodable has judged these markers; pydicom names any fault
    if header is None or header.marker_name not in decoder.frame_headers:
        return None  # not what the transfer syntax says: pydicom decodes what it is
    if not _matches(header, rows, columns, int(ds.get("BitsStored") or 0)):
        return None
    return decoder.decode(ds, codestream, header, min_side)


def _matches(header: FrameHeader, rows: int, columns: int, bits_stored: int) -> bool:
    """The codestream describes the image the header describes (else pydicom decides)."""
    return (
        (header.rows, header.columns) == (rows, columns)
        and header.components == 1
        and header.precision == bits_stored
    )


def _decode_jpeg2000(
    ds: Dataset, codestream: bytes, header: FrameHeader, min_side: int
) -> tuple[np.ndarray, str] | None:
    """OpenJPEG (Pillow) at the most ``reduce`` levels the grey levels and Pillow allow."""
    if header.signed or header.levels is None:
        return None
    rows, columns = header.rows, header.columns
    reduce = 0
    if reduction_commutes(ds, header.precision):
        reduce = reduction_levels(min(rows, columns), min_side, header.levels)
    while reduce and not (_pillow_rounds_up(rows, reduce) and _pillow_rounds_up(columns, reduce)):
        reduce -= 1
    frame = decode_j2k(codestream, reduce, header.precision)
    if frame.shape != (_reduced(rows, reduce), _reduced(columns, reduce)):
        return None
    return frame, f"jpeg2000 reduce={reduce} (openjpeg)"


def _decode_jpeg_dct(
    ds: Dataset, codestream: bytes, header: FrameHeader, min_side: int
) -> tuple[np.ndarray, str] | None:
    """8-bit: libjpeg-turbo's DCT scaling (Pillow ``draft``); 12-bit: libjpeg-turbo in full."""
    if header.precision != 8:
        return _decode_libjpeg_turbo(ds, codestream, header, min_side)
    rows, columns = header.rows, header.columns
    scale = dct_scale(min(rows, columns), min_side) if reduction_commutes(ds, 8) else 1
    scaled = decode_jpeg_scaled(codestream, rows, columns, scale)
    if scaled is None:
        return None
    return scaled, f"jpeg dct scale=1/{scale} (libjpeg-turbo)"


def _decode_libjpeg_turbo(
    ds: Dataset, codestream: bytes, header: FrameHeader, min_side: int
) -> tuple[np.ndarray, str] | None:
    """libjpeg-turbo 3 (imagecodecs ``jpeg8_decode``), full size: lossless and 12-bit."""
    if imagecodecs is None:
        return None
    frame = np.asarray(imagecodecs.jpeg8_decode(codestream))
    return _full_size(frame, header, "jpeg full (libjpeg-turbo)")


def _decode_charls(
    ds: Dataset, codestream: bytes, header: FrameHeader, min_side: int
) -> tuple[np.ndarray, str] | None:
    """CharLS (imagecodecs ``jpegls_decode``), full size."""
    if imagecodecs is None:
        return None
    frame = np.asarray(imagecodecs.jpegls_decode(codestream))
    return _full_size(frame, header, "jpeg-ls full (charls)")


def _full_size(
    frame: np.ndarray, header: FrameHeader, method: str
) -> tuple[np.ndarray, str] | None:
    return (frame, method) if frame.shape == (header.rows, header.columns) else None


#: ``(ds, codestream, frame header, min_side) -> (stored values, decision)``, or None when
#: the decoder does not apply after all (pydicom then decodes the frame in full).
FastDecode = Callable[[Dataset, bytes, FrameHeader, int], tuple[np.ndarray, str] | None]


@dataclass(frozen=True)
class FastDecoder:
    """One transfer syntax's cheapest decode for the model.

    ``frame_headers`` names the frame-header markers (:attr:`FrameHeader.marker_name`) of
    the processes the transfer syntax stands for; a codestream with another (a stream
    mislabelled as, say, baseline) is left to pydicom's decoder for what it really is.
    """

    decode: FastDecode
    frame_headers: frozenset[str]


_JPEG2000 = FastDecoder(_decode_jpeg2000, frozenset({"SIZ"}))
#: Baseline, extended and (mislabelled, but libjpeg-turbo decodes it) progressive DCT.
_JPEG_DCT = FastDecoder(_decode_jpeg_dct, frozenset({"SOF0", "SOF1", "SOF2"}))
_JPEG_LOSSLESS = FastDecoder(_decode_libjpeg_turbo, frozenset({"SOF3"}))
_JPEG_LS = FastDecoder(_decode_charls, frozenset({"SOF55"}))

#: The fast decode of each transfer syntax that has one; the rest decode through pydicom.
FAST_DECODERS: Mapping[UID, FastDecoder] = MappingProxyType(
    {
        JPEG2000Lossless: _JPEG2000,
        JPEG2000: _JPEG2000,
        HTJ2KLossless: _JPEG2000,
        HTJ2KLosslessRPCL: _JPEG2000,
        HTJ2K: _JPEG2000,
        JPEGBaseline8Bit: _JPEG_DCT,
        JPEGExtended12Bit: _JPEG_DCT,
        JPEGLosslessP14: _JPEG_LOSSLESS,
        JPEGLosslessSV1: _JPEG_LOSSLESS,
        JPEGLSLossless: _JPEG_LS,
        JPEGLSNearLossless: _JPEG_LS,
    }
)


def _reduced(size: int, levels: int) -> int:
    """Size of a side after ``levels`` halvings, rounded up (ISO 15444-1 B.5)."""
    return -(-size // (1 << levels))


def _pillow_rounds_up(size: int, levels: int) -> bool:
    """Pillow sizes a reduced image as ``round(size / 2^r)``, OpenJPEG as the ceiling.

    Where the two differ (e.g. 1,705 rows at r = 2: 426 vs 427) Pillow reports a broken
    data stream, so only levels where they agree are used.
    """
    power = 1 << levels
    return int((size + (power >> 1)) / power) == _reduced(size, levels)


def reduction_levels(shorter_side: int, min_side: int, available: int) -> int:
    """Largest ``r <= available`` with ``ceil(shorter_side / 2^r) >= min_side``."""
    levels = 0
    while levels < available and _reduced(shorter_side, levels + 1) >= min_side:
        levels += 1
    return levels


def dct_scale(shorter_side: int, min_side: int) -> int:
    """Largest libjpeg DCT scale divisor (8, 4, 2, 1) keeping the shorter side >= min_side."""
    for scale in _DCT_SCALES:
        if -(-shorter_side // scale) >= min_side:
            return scale
    return 1


def decode_j2k(codestream: bytes, reduce: int, precision: int) -> np.ndarray:
    """Decode a one-component JPEG 2000 codestream at 1/2^reduce per side.

    Pillow's OpenJPEG glue returns 9-16 bit data as ``I;16`` scaled up to 16 bits; it is
    shifted back to the stored precision so the grey-level pipeline sees stored values.
    """
    with Image.open(io.BytesIO(codestream)) as image:
        image.reduce = reduce  # type: ignore[method-assign,assignment]  # Jpeg2KImageFile's knob
        image.load()
        frame = np.asarray(image)
    if frame.dtype == np.uint16 and precision < 16:
        frame = frame >> np.uint16(16 - precision)
    elif frame.dtype != np.uint8 and frame.dtype != np.uint16:
        raise ValueError(f"unexpected JPEG 2000 output {frame.dtype}")
    return frame


def decode_jpeg_scaled(codestream: bytes, rows: int, columns: int, scale: int) -> np.ndarray | None:
    """Decode an 8-bit grey JPEG at 1/``scale`` per side through libjpeg's DCT scaling."""
    with Image.open(io.BytesIO(codestream)) as image:
        if image.mode != "L":
            return None
        image.draft("L", (-(-columns // scale), -(-rows // scale)))
        image.load()
        return np.asarray(image)
