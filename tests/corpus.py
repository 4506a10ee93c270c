"""Test inputs written on the fly from real dataset JPEGs (the committed sample,
``tests/datasets.py``): healthy CR DICOMs, a lateral view, a CT slice, a truncated file,
plain JPEGs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from tests.ingest.dicom_factory import base_dataset, jpeg_grey, sample_jpegs, set_pixels, write

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def dataset_jpegs(count: int) -> list[Path]:
    """``count`` distinct training JPEGs of the committed sample, alternating NORMAL and
    PNEUMONIA (at most 24)."""
    per_class = (count + 1) // 2
    normal_and_pneumonia = sample_jpegs(per_class)
    normal, pneumonia = normal_and_pneumonia[:per_class], normal_and_pneumonia[per_class:]
    mixed = [p for pair in zip(normal, pneumonia, strict=True) for p in pair]
    return mixed[:count]


def cr_dicom(source_jpeg: Path, path: Path, **attributes: object) -> Path:
    """A CR chest PA DICOM (MONOCHROME2, 8 bit) with the JPEG's pixels; override any tag."""
    ref = jpeg_grey(source_jpeg)
    ds = set_pixels(base_dataset(*ref.shape), ref)
    ds.AccessionNumber = f"A{generate_uid()[-10:]}"
    ds.PatientID = f"P{generate_uid()[-10:]}"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    if "SOPClassUID" in attributes:
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    return write(ds, path)


def lateral_dicom(source_jpeg: Path, path: Path) -> Path:
    return cr_dicom(source_jpeg, path, ViewPosition="LL")


def ct_dicom(path: Path) -> Path:
    ref = (np.arange(64 * 64).reshape(64, 64) % 256).astype(np.uint8)
    ds = set_pixels(base_dataset(64, 64), ref)
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    ds.Modality = "CT"
    return write(ds, path)


def truncated_copy(source: Path, path: Path, keep: float = 0.5) -> Path:
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def copy_jpeg(source_jpeg: Path, path: Path) -> Path:
    shutil.copyfile(source_jpeg, path)
    return path
