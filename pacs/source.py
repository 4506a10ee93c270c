"""The source radiograph's header: the patient and study every result attaches to.

:class:`ingest.ImageMetadata` keeps only what triage needs, so the results re-read the
source's header (never its pixels) and copy its Patient and General Study modules from it.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.valuerep import DA, TM

#: PS3.3 C.7.1.1 Patient / C.7.2.1 General Study, Type 2: present in every result, empty
#: where the source does not know them (highdicom reads them as attributes).
TYPE2_PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
#: Optional patient and study attributes copied as they are when the source has them.
COPIED_IF_PRESENT = (
    "IssuerOfPatientID",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "StudyDescription",
)
REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
#: Type 2 dates and times highdicom parses: a malformed one (``2019-04-17``) made the SR
#: constructor raise, quoting it, and the row got no results at all.
PARSED_TYPE2 = (("PatientBirthDate", DA), ("StudyDate", DA), ("StudyTime", TM))


class SourceHeaderError(ValueError):
    """The source cannot carry results: not DICOM, or without the UIDs results reference."""


def read_source(path: Path) -> Dataset:
    """Header-only read of the scored DICOM file, ready to be the results' reference.

    Raises :class:`SourceHeaderError` naming the missing tag; the pixels are never read. The
    message never names the file: archived names are the sender's, often a patient's name,
    and the results task logs this error (the caller knows the row id).
    """
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, EOFError) as error:
        reason = type(error).__name__
        raise SourceHeaderError(f"the source is not a readable DICOM file ({reason})") from error
    return reference_dataset(dataset)


def reference_dataset(source: Dataset) -> Dataset:
    """A copy of ``source`` whose Type 2 patient/study attributes exist (empty if unknown)."""
    for keyword in REQUIRED_UIDS:
        if not source.get(keyword):
            raise SourceHeaderError(f"the source has no {keyword}: results cannot reference it")
    reference = copy.deepcopy(source)
    for keyword in TYPE2_PATIENT_STUDY:
        if keyword not in reference:
            setattr(reference, keyword, None)
    for keyword, kind in PARSED_TYPE2:
        value = reference.get(keyword)
        if value in (None, ""):
            continue
        try:
            kind(value)
        except (TypeError, ValueError):
            setattr(reference, keyword, None)  # empty (unknown) rather than invalid
    return reference


def copy_optional_patient_study(source: Dataset, result: Dataset) -> None:
    """Copy :data:`COPIED_IF_PRESENT` from ``source`` into ``result``."""
    for keyword in COPIED_IF_PRESENT:
        if keyword in source and source[keyword].value not in (None, ""):
            result[keyword] = copy.deepcopy(source[keyword])


def instance_number(source: Dataset) -> int:
    """The source's (0020,0013) Instance Number, so result n describes image n; else 1."""
    value = source.get("InstanceNumber")
    try:
        return max(int(value), 1) if value not in (None, "") else 1
    except (TypeError, ValueError):
        return 1
