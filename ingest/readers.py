"""The two public reads, dispatched by content through one table of readers.

``read_header`` is the cheap pass (no pixel decoded) that eligibility needs;
``read_image`` decodes and normalizes. Both raise :class:`IngestError` and nothing else
for anything a file can contain.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from ingest.blank import check_display_levels, check_rescale
from ingest.dicom import (
    decode_frame,
    read_dataset,
    read_dataset_header,
    transfer_syntax,
)
from ingest.errors import LIBRARY_ERRORS, IngestError, Reason
from ingest.greylevels import (
    is_supported_photometric,
    photometric_interpretation,
    to_display_levels,
)
from ingest.hashing import file_sha256
from ingest.image import ImageMetadata, SourceImage, SourceKind
from ingest.limits import check_pixel_count, checked_file_size
from ingest.metadata import dicom_metadata, raster_metadata
from ingest.raster import read_raster_pixels
from ingest.reduced import decode_for_model, display_levels_for_model
from ingest.sniff import Sniffed, sniff


@dataclass(frozen=True)
class Reader:
    """One container format: how to read its header and how to decode its pixels."""

    header: Callable[[Path, Sniffed, str], ImageMetadata]
    #: The last argument is ``min_side`` (None: full resolution); see :mod:`ingest.reduced`.
    pixels: Callable[[Path, Sniffed, ImageMetadata, int | None], SourceImage]


def read_header(path: Path) -> ImageMetadata:
    """Identify ``path`` by content and read its metadata without decoding a pixel."""
    checked_file_size(path)
    sniffed = sniff(path)
    return READERS[sniffed.kind].header(path, sniffed, file_sha256(path))


def read_image(path: Path, min_side: int | None = None) -> SourceImage:
    """Decode ``path`` into display grey levels (float32 0..255, 0 = black).

    ``min_side``: decode only as many pixels as a consumer that needs a shorter side of
    at least that many needs (:mod:`ingest.reduced`); None decodes full resolution.
    """
    return decode(path, read_header(path), min_side)


def decode(path: Path, metadata: ImageMetadata, min_side: int | None = None) -> SourceImage:
    """Decode ``path``, whose header was already read into ``metadata``."""
    sniffed = sniff(path)
    if sniffed.kind is not metadata.kind:
        raise IngestError(Reason.CORRUPT, "The file changed format after its header was read.")
    return READERS[sniffed.kind].pixels(path, sniffed, metadata, min_side)


def _dicom_header(path: Path, sniffed: Sniffed, sha256: str) -> ImageMetadata:
    ds = read_dataset_header(path, sniffed)
    uid = transfer_syntax(ds)
    return dicom_metadata(ds, path, sha256, str(uid) if uid else None)


def dicom_dataset(path: Path, sniffed: Sniffed, metadata: ImageMetadata) -> Dataset:
    """The whole dataset of a DICOM whose header was read, after the checks every decode
    of its pixels needs first (claimed size, photometric interpretation, rescale). Shared
    by :func:`read_image` and the viewer's :func:`ingest.stored.read_stored`."""
    if metadata.rows is not None and metadata.columns is not None:
        # Bound the claimed size from the header before Pixel Data is read into memory.
        check_pixel_count(metadata.rows, metadata.columns, 1, metadata.number_of_frames or 1)
    ds = read_dataset(path, sniffed)
    photometric = photometric_interpretation(ds)
    if not is_supported_photometric(photometric):
        raise IngestError(
            Reason.UNSUPPORTED_PHOTOMETRIC,
            f"(0028,0004) Photometric Interpretation '{photometric}' is not supported.",
        )
    check_rescale(ds)  # a slope of 0 or NaN makes any picture blank: refuse before decoding
    return ds


def _dicom_pixels(
    path: Path, sniffed: Sniffed, metadata: ImageMetadata, min_side: int | None
) -> SourceImage:
    ds = dicom_dataset(path, sniffed, metadata)
    decision = None
    if min_side is None:
        frame = decode_frame(ds)
    else:
        frame, decision = decode_for_model(ds, min_side)
    if frame.ndim not in (2, 3):
        raise IngestError(Reason.CORRUPT, f"The decoded frame has shape {frame.shape}.")
    try:
        if min_side is None or decision is None:
            pixels, normalization = to_display_levels(frame, ds)
        else:  # box-averaged after the grey levels, the decision recorded first
            pixels, normalization = display_levels_for_model(frame, ds, min_side, decision)
    except LIBRARY_ERRORS as exc:
        raise IngestError(
            Reason.CORRUPT,
            f"The grey-level modules cannot be applied ({type(exc).__name__}: {exc}).",
        ) from exc
    check_display_levels(pixels)
    return SourceImage(pixels=pixels, metadata=metadata, normalization=normalization)


def _raster_header(path: Path, sniffed: Sniffed, sha256: str) -> ImageMetadata:
    return raster_metadata(path, sha256, sniffed.kind)


def _raster_pixels(
    path: Path, sniffed: Sniffed, metadata: ImageMetadata, min_side: int | None
) -> SourceImage:
    pixels, normalization = read_raster_pixels(path)
    check_display_levels(pixels)
    return SourceImage(pixels=pixels, metadata=metadata, normalization=normalization)


READERS: Mapping[SourceKind, Reader] = {
    SourceKind.DICOM: Reader(header=_dicom_header, pixels=_dicom_pixels),
    SourceKind.JPEG: Reader(header=_raster_header, pixels=_raster_pixels),
    SourceKind.PNG: Reader(header=_raster_header, pixels=_raster_pixels),
}
