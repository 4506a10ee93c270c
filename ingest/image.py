"""The value objects every reader returns: header metadata and a display-level grey image.

``SourceImage.pixels`` is what a DICOM viewer would put on screen, as a 2-D float32 array in
display grey levels 0..255 (0 = black). That is the only input
:func:`model.preprocess.preprocess` accepts, so a JPEG from the training set and a
16-bit MONOCHROME1 DICOM reach the network alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, time
from enum import StrEnum

import numpy as np

UID_MAX_LENGTH = 64  # PS3.5 6.2, value representation UI


class SourceKind(StrEnum):
    DICOM = "dicom"
    JPEG = "jpeg"
    PNG = "png"


@dataclass(frozen=True)
class ImageMetadata:
    """What the header says about the image, read before any pixel is decoded.

    For JPEG/PNG only ``kind``, ``file_sha256`` and ``source_name`` are known; every DICOM
    field is then ``None``. Values are PHI: never log them.
    """

    kind: SourceKind
    file_sha256: str
    source_name: str
    sop_instance_uid: str | None = None
    sop_class_uid: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    accession_number: str | None = None
    patient_id: str | None = None
    patient_age_years: float | None = None
    patient_sex: str | None = None
    modality: str | None = None
    body_part_examined: str | None = None
    view_position: str | None = None
    presentation_intent_type: str | None = None
    photometric_interpretation: str | None = None
    rows: int | None = None
    columns: int | None = None
    number_of_frames: int | None = None
    transfer_syntax_uid: str | None = None
    study_date: date | None = None
    study_time: time | None = None
    institution_name: str | None = None
    manufacturer: str | None = None
    study_description: str | None = None  # (0008,1030), shown to the reader

    def __post_init__(self) -> None:
        if len(self.file_sha256) != 64:
            raise ValueError(f"file_sha256 must be 64 hex digits, got {len(self.file_sha256)}")
        for name in (
            "sop_instance_uid",
            "sop_class_uid",
            "study_instance_uid",
            "series_instance_uid",
        ):
            value = getattr(self, name)
            if value is not None and len(value) > UID_MAX_LENGTH:
                raise ValueError(f"{name} is longer than {UID_MAX_LENGTH} characters")


@dataclass(frozen=True)
class Normalization:
    """How the stored pixels became display grey levels, so a reviewer can audit it.

    ``steps`` lists the transforms in the order applied, e.g.
    ``("modality_lut:rescale", "voi:window LINEAR", "presentation:monochrome1_inverted",
    "scale:0-255")``.
    """

    steps: tuple[str, ...]
    bits_stored: int
    source_dtype: str
    voi_path: str  # "voi_lut_sequence" | "window" | "percentile" | "none (8-bit raster)"
    inverted: bool = False
    frame_rule: str = "single frame"
    notes: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class SourceImage:
    """A decoded image in display grey levels plus where it came from."""

    pixels: np.ndarray  # 2-D float32, 0..255, 0 = black
    metadata: ImageMetadata
    normalization: Normalization

    def __post_init__(self) -> None:
        if self.pixels.ndim != 2:
            raise ValueError(f"pixels must be 2-D, got shape {self.pixels.shape}")
        if self.pixels.dtype != np.float32:
            raise ValueError(f"pixels must be float32, got {self.pixels.dtype}")
        if self.pixels.size and (self.pixels.min() < 0.0 or self.pixels.max() > 255.0):
            raise ValueError("pixels must lie in display grey levels 0..255")
