"""Radiographs, overlays and predictions for the SR/SC tests: CR images written from real
dataset JPEGs, for a known patient and study."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset

from model.prediction import Label, Prediction, Priority
from tests.ingest.dicom_factory import base_dataset, jpeg_grey, sample_jpegs, set_pixels

PATIENT_NAME = "Test^Child^Anna"
PATIENT_ID = "PACS-TEST-0042"
ACCESSION = "ACC-4242"
STUDY_ID = "S4242"


def radiograph(reference: np.ndarray, *, instance_number: int = 1) -> FileDataset:
    """A CR chest PA of a known patient and study holding ``reference`` as its pixels."""
    ds = set_pixels(base_dataset(*reference.shape), reference)
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = "20210315"
    ds.IssuerOfPatientID = "TEST-HOSPITAL"
    ds.AccessionNumber = ACCESSION
    ds.StudyID = STUDY_ID
    ds.StudyDescription = "XR CHEST PA"
    ds.ReferringPhysicianName = "Referrer^Rita"
    ds.InstanceNumber = instance_number
    ds.PatientOrientation = ["L", "F"]
    return ds


def pneumonia_grey() -> np.ndarray:
    """A real pneumonia radiograph (the committed sample's first)."""
    return jpeg_grey(sample_jpegs(per_class=1)[1])


def write_radiograph(path: Path, reference: np.ndarray) -> Path:
    """``radiograph(reference)`` (instance 3) saved as a DICOM file at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    radiograph(reference, instance_number=3).save_as(path, enforce_file_format=True)
    return path


def synthetic_heatmap(size: int = 64) -> np.ndarray:
    """A single hot spot in the lower left of the image, values in [0, 1]."""
    yy, xx = np.mgrid[0:size, 0:size]
    centre_y, centre_x = 0.65 * size, 0.3 * size
    return np.exp(-((yy - centre_y) ** 2 + (xx - centre_x) ** 2) / (0.02 * size**2)).astype(
        np.float32
    )


URGENT = Prediction(
    probability=0.91,
    label=Label.PNEUMONIA,
    priority=Priority.URGENT,
    threshold=0.37,
    model_version="sepcnn-test-1.0",
)
ROUTINE = Prediction(
    probability=0.08,
    label=Label.NORMAL,
    priority=Priority.ROUTINE,
    threshold=0.37,
    model_version="sepcnn-test-1.0",
)
