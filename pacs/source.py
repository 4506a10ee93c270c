"""The source radiograph's header: the patient and study every result attaches to.

:class:`ingest.ImageMetadata` keeps only what triage needs, so the results re-read the
source's header (never its pixels) with ingest's own reader: whatever ingest accepted (a file
without a preamble or Part-10 file meta included) the results can read too.

The results never carry the source's elements as they are. :func:`reference_dataset` builds
a new dataset with only what the SR and SC need, each value made conformant by
:mod:`pacs.conform` (repaired, or left out: an invalid birth date is omitted, never copied),
in UTF-8 when any kept text is not ASCII. The four UIDs that reference the source cannot be
repaired without pointing somewhere else: a source without valid ones is refused with a
:class:`SourceHeaderError` that names the tag, and its row shows ``failed`` with that reason.
"""

from __future__ import annotations

from pathlib import Path

from pydicom.datadict import dictionary_VM, dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset

from ingest.dicom import read_dataset_header
from ingest.errors import IngestError
from ingest.image import SourceKind
from ingest.sniff import sniff
from pacs.conform import conform, repair

#: PS3.3 C.7.1.1 Patient / C.7.2.1 General Study, Type 2: present in every result, empty
#: where the source does not know them or its value is not valid.
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
#: Optional patient and study attributes copied when the source has valid ones.
COPIED_IF_PRESENT = (
    "IssuerOfPatientID",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "StudyDescription",
)
#: What the SC takes from the source image itself, and the acquisition equipment highdicom
#: records as contributing equipment; left out when absent or invalid.
IMAGE_ATTRIBUTES = (
    "Modality",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PixelRepresentation",
    "InstanceNumber",
    "PatientOrientation",
    "BodyPartExamined",
    "Laterality",
    "Manufacturer",
    "ManufacturerModelName",
    "SoftwareVersions",
    "DeviceSerialNumber",
    "InstitutionName",
    "InstitutionalDepartmentName",
    "StationName",
)
#: VRs held as numbers: copied when they are integers in range, never repaired.
_BINARY_VRS = {"US": (0, 0xFFFF), "SS": (-0x8000, 0x7FFF)}
REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
MODALITY_OF_SOP_CLASS = {
    "1.2.840.10008.5.1.4.1.1.1": "CR",
    "1.2.840.10008.5.1.4.1.1.1.1": "DX",
}
PATIENT_SEX_VALUES = frozenset({"M", "F", "O"})  # PS3.3 C.7.1.1 (0010,0040) enumerated
UTF8 = "ISO_IR 192"


class SourceHeaderError(ValueError):
    """The source cannot carry results: not DICOM, or without valid UIDs to reference.

    The message names the tag, never a value (a header holds patient data).
    """


def read_source(path: Path) -> Dataset:
    """Header-only read of the scored DICOM file, ready to be the results' reference.

    Reads as ingest does (a preamble-less dataset only after ingest's plausibility check),
    so every file that was scored can be read here. Raises :class:`SourceHeaderError`; the
    pixels are never read. The message never names the file: archived names are the
    sender's, often a patient's name, and the results task logs this error.
    """
    try:
        sniffed = sniff(path)
        if sniffed.kind is not SourceKind.DICOM:
            raise SourceHeaderError(f"the source is not a readable DICOM file ({sniffed.kind})")
        dataset = read_dataset_header(path, sniffed)
    except IngestError as error:
        raise SourceHeaderError(
            f"the source is not a readable DICOM file: {error.reason.value}"
        ) from error
    except OSError as error:
        raise SourceHeaderError(f"the source cannot be read: {error.strerror}") from error
    return reference_dataset(dataset)


def reference_dataset(source: Dataset) -> Dataset:
    """A new dataset holding what results take from ``source``, every value conformant.

    The four UIDs are required and kept exactly (padding stripped); the Type 2 patient and
    study attributes are always present (empty when unknown or invalid); the others only
    when valid. (0008,0005) is UTF-8 when a kept value is not ASCII, absent otherwise.
    """
    reference = Dataset()
    for keyword in REQUIRED_UIDS:
        reference.add_new(keyword, "UI", _required_uid(source, keyword))
    for keyword in TYPE2_PATIENT_STUDY:
        value = _conformant(source, keyword)
        if keyword == "PatientSex" and value not in PATIENT_SEX_VALUES:
            value = None
        reference.add_new(keyword, dictionary_VR(keyword), value or None)
    for keyword in (*COPIED_IF_PRESENT, *IMAGE_ATTRIBUTES):
        value = _conformant(source, keyword)
        if value:
            reference.add_new(keyword, dictionary_VR(keyword), value)
    if "Modality" not in reference:  # eligibility scored it as CR or DX by its SOP Class
        reference.Modality = MODALITY_OF_SOP_CLASS.get(reference.SOPClassUID, "OT")
    if any(not str(element.value).isascii() for element in reference):
        reference.SpecificCharacterSet = UTF8
    return reference


def copy_optional_patient_study(source: Dataset, result: Dataset) -> None:
    """Copy :data:`COPIED_IF_PRESENT` from ``source`` (a :func:`reference_dataset`)."""
    for keyword in COPIED_IF_PRESENT:
        if keyword in source and source[keyword].value not in (None, ""):
            result.add_new(keyword, source[keyword].VR, source[keyword].value)


def instance_number(source: Dataset) -> int:
    """The source's (0020,0013) Instance Number, so result n describes image n; else 1."""
    value = source.get("InstanceNumber")
    try:
        return max(int(value), 1) if value not in (None, "") else 1
    except (TypeError, ValueError):
        return 1


def _required_uid(source: Dataset, keyword: str) -> str:
    number = f"{tag_for_keyword(keyword):08X}"
    tag = f"({number[:4]},{number[4:]})"
    element = source.get(keyword)
    if element is None or element == "":
        raise SourceHeaderError(f"the source has no {tag} {keyword}: results cannot reference it")
    value = conform("UI", element)
    if not isinstance(value, str) or not value or repair("UI", str(element)) != value:
        raise SourceHeaderError(
            f"the source's {tag} {keyword} is not a valid UID: results cannot reference it"
        )
    return value


def _conformant(source: Dataset, keyword: str) -> str | list[str] | None:
    """The conformant value of ``keyword`` (the first one where the VM is 1), or ``None``
    when absent or not valid."""
    if keyword not in source:
        return None
    vr = dictionary_VR(keyword)
    if vr in _BINARY_VRS:
        low, high = _BINARY_VRS[vr]
        number = source[keyword].value
        return number if isinstance(number, int) and low <= number <= high else None  # type: ignore[return-value]
    try:
        value = conform(vr, source[keyword].value)
    except (ValueError, TypeError, LookupError):  # a value pydicom cannot even decode
        return None
    if isinstance(value, list) and dictionary_VM(keyword) == "1":
        return value[0]
    return value or None
