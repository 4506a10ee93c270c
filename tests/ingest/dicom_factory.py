"""Builds the DICOM test corpus from real dataset JPEGs (the committed sample, tests/datasets.py).

Each variant stores one 8-bit source image in a different DICOM encoding, chosen so that
a correct grey-level pipeline gives back the source pixels: the stored values, rescale,
window or VOI LUT and photometric interpretation of each variant are inverse to each
other. A pipeline with a step missing, in the wrong order or applied twice does not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import imagecodecs
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels.encoders import JPEGLSLosslessEncoder
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from tests.datasets import sample_files

CR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1")
DX_FOR_PRESENTATION = UID("1.2.840.10008.5.1.4.1.1.1.1")


def sample_jpegs(per_class: int = 1) -> list[Path]:
    """The first ``per_class`` training JPEGs of each class of the committed sample
    (``tests/data/pediatric-cxr-sample``), NORMAL first, in a stable order."""
    paths: list[Path] = []
    for label in ("NORMAL", "PNEUMONIA"):
        files = sample_files("train", label)
        if per_class > len(files):
            raise ValueError(f"the committed sample has {len(files)} {label} films")
        paths.extend(files[:per_class])
    return paths


def jpeg_grey(path: Path) -> np.ndarray:
    """The source JPEG as Pillow decodes it to 8-bit grey: the reference pixels."""
    with Image.open(path) as image:
        return np.asarray(image.convert("L"), dtype=np.uint8)


def base_dataset(
    rows: int, columns: int, *, sop_class: UID = CR_IMAGE_STORAGE, modality: str = "CR"
) -> FileDataset:
    """A CR chest PA header of a 3-year-old, with file meta, no pixels yet."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", Dataset(), file_meta=meta, preamble=b"\x00" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.AccessionNumber = "ACC0001"
    ds.PatientID = "TEST-0001"
    ds.PatientAge = "003Y"
    ds.PatientSex = "F"
    ds.Modality = modality
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.StudyDate = "20240131"
    ds.StudyTime = "101530"
    ds.InstitutionName = "Test Hospital"
    ds.Manufacturer = "cxr-triage tests"
    ds.Rows, ds.Columns = rows, columns
    return ds


def set_pixels(
    ds: Dataset,
    stored: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    raw: bytes | None = None,
) -> Dataset:
    """Set the Image Pixel module and native Pixel Data from ``stored`` (or ``raw`` bytes)."""
    bits_allocated = stored.dtype.itemsize * 8
    ds.Rows, ds.Columns = stored.shape[:2]
    ds.SamplesPerPixel = 3 if stored.ndim == 3 else 1
    if stored.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored or bits_allocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if stored.dtype.kind == "i" else 0
    ds.PixelData = (
        raw
        if raw is not None
        else np.ascontiguousarray(stored).astype(stored.dtype.newbyteorder("<")).tobytes()
    )
    ds["PixelData"].VR = "OW" if bits_allocated > 8 else "OB"
    return ds


def window(ds: Dataset, low: float, high: float, function: str = "LINEAR_EXACT") -> Dataset:
    """A window mapping modality values ``low..high`` exactly onto the display range."""
    if function == "LINEAR":  # PS3.3 C.11.2.1.2.1: c - 0.5 and w - 1 span the range
        ds.WindowCenter = f"{(low + high) / 2 + 0.5:.6g}"
        ds.WindowWidth = f"{high - low + 1:.6g}"
    else:
        ds.WindowCenter = f"{(low + high) / 2:.6g}"
        ds.WindowWidth = f"{high - low:.6g}"
        ds.VOILUTFunction = function
    return ds


def encapsulated(ds: Dataset, codestream: bytes, uid: UID) -> Dataset:
    """Replace Pixel Data with one encapsulated fragment in transfer syntax ``uid``."""
    ds.PixelData = encapsulate([codestream])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = uid
    if uid != RLELossless:
        ds.LossyImageCompression = (
            "00" if uid not in (JPEGBaseline8Bit, JPEGExtended12Bit) else "01"
        )
    return ds


def write(ds: FileDataset, path: Path, *, preamble: bool = True) -> Path:
    """Write ``ds``; without ``preamble`` as a raw dataset (no preamble, no file meta)."""
    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.preamble = None
        tsyntax = ds.file_meta.TransferSyntaxUID
        ds.file_meta = FileMetaDataset()
        ds.save_as(
            path,
            enforce_file_format=False,
            implicit_vr=tsyntax == ImplicitVRLittleEndian,
            little_endian=True,
        )
    return path


# -- the variants: 8-bit source image -> DICOM whose display levels equal the source ------


def native_8bit(ref: np.ndarray) -> FileDataset:
    """MONOCHROME2, 8 bits, no VOI module: stored values are display levels."""
    return set_pixels(base_dataset(*ref.shape), ref)


def monochrome1_8bit(ref: np.ndarray) -> FileDataset:
    """MONOCHROME1 (0 is white), 8 bits, no VOI: must be inverted once."""
    return set_pixels(
        base_dataset(*ref.shape), (255 - ref).astype(np.uint8), photometric="MONOCHROME1"
    )


def rescale_window_12bit(ref: np.ndarray) -> FileDataset:
    """12 of 16 bits, slope 0.5 / intercept -100, LINEAR window over the modality range."""
    ds = set_pixels(base_dataset(*ref.shape), ref.astype(np.uint16) * 16, bits_stored=12)
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = "0.5", "-100", "US"
    return window(ds, -100.0, 255 * 8 - 100.0, "LINEAR")


def monochrome1_16bit_rescale(ref: np.ndarray) -> FileDataset:
    """MONOCHROME1, 16 bits, intercept -1000, LINEAR_EXACT window: VOI then inversion."""
    stored = (255 - ref.astype(np.uint16)) * 257
    ds = set_pixels(base_dataset(*ref.shape), stored, photometric="MONOCHROME1")
    ds.RescaleSlope, ds.RescaleIntercept = "1", "-1000"
    return window(ds, -1000.0, 65535 - 1000.0)


def inverse_shape_monochrome1(ref: np.ndarray) -> FileDataset:
    """MONOCHROME1 with Presentation LUT Shape INVERSE (DX rule): one inversion, not two."""
    ds = monochrome1_16bit_rescale(ref)
    ds.PresentationLUTShape = "INVERSE"
    return ds


def inverse_shape_monochrome2(ref: np.ndarray) -> FileDataset:
    """MONOCHROME2 storing 0 as white, told so by Presentation LUT Shape INVERSE."""
    ds = monochrome1_16bit_rescale(ref)
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PresentationLUTShape = "INVERSE"
    return ds


def signed_16bit(ref: np.ndarray) -> FileDataset:
    """Signed 16-bit (Pixel Representation 1) values -12000..13500 with a window."""
    stored = (ref.astype(np.int16) * 100 - 12000).astype(np.int16)
    ds = set_pixels(base_dataset(*ref.shape), stored)
    return window(ds, -12000.0, 255 * 100 - 12000.0)


def signed_12bit_dirty_high_bits(ref: np.ndarray) -> FileDataset:
    """Signed 12 of 16 bits, with garbage (overlay) bits above High Bit 11."""
    values = ref.astype(np.int16) * 8 - 1024
    raw = (values.astype(np.uint16) & 0x0FFF) | 0xA000  # bits 12-15 are not pixel data
    ds = set_pixels(
        base_dataset(*ref.shape), values, bits_stored=12, raw=raw.astype("<u2").tobytes()
    )
    return window(ds, -1024.0, 255 * 8 - 1024.0)


def voi_lut_nonlinear(ref: np.ndarray) -> FileDataset:
    """16-bit values stored squared, a square-root VOI LUT Sequence, and a decoy window.

    Only the LUT (preferred over the window, PS3.3 C.11.2) gives the source back.
    """
    stored = np.rint(65535.0 * (ref / 255.0) ** 2).astype(np.uint16)
    ds = set_pixels(base_dataset(*ref.shape), stored)
    lut = np.rint(65535.0 * np.sqrt(np.arange(65536) / 65535.0)).astype(np.uint16)
    item = Dataset()
    item.LUTDescriptor = [0, 0, 16]  # 0 entries means 65536
    item.LUTExplanation = "SQRT"
    item.LUTData = lut.astype("<u2").tobytes()
    item["LUTData"].VR = "OW"
    ds.VOILUTSequence = Sequence([item])
    ds.WindowCenter, ds.WindowWidth = "1000", "500"  # decoy: would saturate the image
    return ds


def dx_for_presentation_16bit(ref: np.ndarray) -> FileDataset:
    """DX For Presentation, 16-bit values ``ref * 257``, LINEAR_EXACT full-range window."""
    ds = base_dataset(*ref.shape, sop_class=DX_FOR_PRESENTATION, modality="DX")
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.PresentationLUTShape = "IDENTITY"
    set_pixels(ds, ref.astype(np.uint16) * 257)
    return window(ds, 0.0, 65535.0)


def _twelve_bit(ref: np.ndarray) -> tuple[FileDataset, np.ndarray]:
    stored = ref.astype(np.uint16) * 16
    ds = set_pixels(base_dataset(*ref.shape), stored, bits_stored=12)
    return window(ds, 0.0, 255 * 16.0), stored


def rle_16bit(ref: np.ndarray) -> FileDataset:
    """RLE Lossless (pydicom's own or pylibjpeg-rle encoder)."""
    ds = dx_for_presentation_16bit(ref)
    ds.compress(RLELossless)
    return ds


def jpeg_ls_12bit(ref: np.ndarray) -> FileDataset:
    """JPEG-LS Lossless, 12 bits (pyjpegls encoder, pylibjpeg-libjpeg or pyjpegls decoder)."""
    ds, _ = _twelve_bit(ref)
    ds.compress(JPEGLSLossless)
    return ds


def jpeg2000_16bit(ref: np.ndarray) -> FileDataset:
    """JPEG 2000 Lossless, 16 bits (pylibjpeg-openjpeg)."""
    ds = dx_for_presentation_16bit(ref)
    ds.compress(JPEG2000Lossless)
    return ds


def htj2k_16bit(ref: np.ndarray) -> FileDataset:
    """High-Throughput JPEG 2000 Lossless, 16 bits (imagecodecs encoder)."""
    ds = dx_for_presentation_16bit(ref)
    code = imagecodecs.htj2k_encode(ref.astype(np.uint16) * 257, reversible=True)
    return encapsulated(ds, bytes(code), HTJ2KLossless)


def jpeg_lossless_sv1_12bit(ref: np.ndarray) -> FileDataset:
    """JPEG Lossless, Non-Hierarchical, First-Order Prediction (.70), 12 bits."""
    ds, stored = _twelve_bit(ref)
    code = imagecodecs.jpeg8_encode(stored, lossless=True, predictor=1, bitspersample=12)
    return encapsulated(ds, bytes(code), JPEGLosslessSV1)


def jpeg_lossless_p14_16bit(ref: np.ndarray) -> FileDataset:
    """JPEG Lossless, Non-Hierarchical (.57), predictor 6, 16 bits."""
    ds = dx_for_presentation_16bit(ref)
    stored = ref.astype(np.uint16) * 257
    code = imagecodecs.jpeg8_encode(stored, lossless=True, predictor=6, bitspersample=16)
    return encapsulated(ds, bytes(code), JPEGLossless)


def jpeg_baseline_source_bytes(source: Path) -> Callable[[np.ndarray], FileDataset]:
    """JPEG Baseline (.50): the dataset JPEG's own bytes encapsulated unchanged."""

    def build(ref: np.ndarray) -> FileDataset:
        ds = set_pixels(base_dataset(*ref.shape), ref)
        with Image.open(source) as image:
            if image.mode != "L":
                raise ValueError("the baseline variant needs a greyscale source JPEG")
        return encapsulated(ds, source.read_bytes(), JPEGBaseline8Bit)

    return build


def jpeg_extended_12bit(ref: np.ndarray) -> FileDataset:
    """JPEG Extended (.51), 12-bit lossy at quality 95."""
    ds, stored = _twelve_bit(ref)
    code = imagecodecs.jpeg8_encode(stored, level=95, bitspersample=12)
    return encapsulated(ds, bytes(code), JPEGExtended12Bit)


def deflated(ref: np.ndarray) -> FileDataset:
    """Deflated Explicit VR Little Endian (the whole dataset zlib-compressed)."""
    ds, _ = _twelve_bit(ref)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    return ds


def implicit_vr(ref: np.ndarray) -> FileDataset:
    """Implicit VR Little Endian, the DICOM default transfer syntax."""
    ds, _ = _twelve_bit(ref)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return ds


@dataclass(frozen=True)
class Variant:
    """One encoding of the source image and how close it must come back."""

    name: str
    build: Callable[[np.ndarray], FileDataset]
    lossless: bool = True
    preamble: bool = True


#: Tolerance versus the source JPEG's 8-bit pixels, in display grey levels.
LOSSLESS_MEAN_ABS, LOSSLESS_MAX_ABS = 1.0, 2.0
LOSSY_MEAN_ABS, LOSSY_MAX_ABS = 1.5, 12.0

VARIANTS: tuple[Variant, ...] = (
    Variant("native_8bit", native_8bit),
    Variant("monochrome1_8bit", monochrome1_8bit),
    Variant("rescale_window_12bit", rescale_window_12bit),
    Variant("monochrome1_16bit_rescale", monochrome1_16bit_rescale),
    Variant("inverse_shape_monochrome1", inverse_shape_monochrome1),
    Variant("inverse_shape_monochrome2", inverse_shape_monochrome2),
    Variant("signed_16bit", signed_16bit),
    Variant("signed_12bit_dirty_high_bits", signed_12bit_dirty_high_bits),
    Variant("voi_lut_nonlinear", voi_lut_nonlinear),
    Variant("dx_for_presentation_16bit", dx_for_presentation_16bit),
    Variant("rle_16bit", rle_16bit),
    Variant("jpeg_ls_12bit", jpeg_ls_12bit),
    Variant("jpeg2000_16bit", jpeg2000_16bit),
    Variant("htj2k_16bit", htj2k_16bit),
    Variant("jpeg_lossless_sv1_12bit", jpeg_lossless_sv1_12bit),
    Variant("jpeg_lossless_p14_16bit", jpeg_lossless_p14_16bit),
    Variant("jpeg_extended_12bit", jpeg_extended_12bit, lossless=False),
    Variant("deflated", deflated),
    Variant("implicit_vr", implicit_vr),
    Variant("no_preamble_raw_dataset", rescale_window_12bit, preamble=False),
    Variant("no_preamble_implicit", implicit_vr, preamble=False),
)


def jpeg_ls_encoder_available() -> bool:
    """pyjpegls (a dev dependency) is what pydicom encodes JPEG-LS with."""
    return bool(JPEGLSLosslessEncoder.is_available)
