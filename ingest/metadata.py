"""ImageMetadata from a header-only DICOM dataset, or from a raster file's bytes.

Values are read leniently (a PACS keeps files with odd values too): an unparsable date,
age or number becomes ``None``; only a UID over 64 characters, which no worklist key can
hold, rejects the file. Values are PHI and never appear in an error message.
"""

from __future__ import annotations

import re
from datetime import date, time
from pathlib import Path
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset

from ingest.errors import IngestError, Reason
from ingest.image import UID_MAX_LENGTH, ImageMetadata, SourceKind

_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY])\s*$", re.IGNORECASE)
_DAYS_PER_UNIT = {"D": 1.0, "W": 7.0, "M": 365.25 / 12.0, "Y": 365.25}
_SEXES = frozenset({"M", "F", "O"})
#: Dates of the acquisition, in the order used to compute an age from the birth date.
_EXAM_DATES = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")
_UIDS = {
    "sop_instance_uid": ("SOPInstanceUID", "(0008,0018) SOP Instance UID"),
    "sop_class_uid": ("SOPClassUID", "(0008,0016) SOP Class UID"),
    "study_instance_uid": ("StudyInstanceUID", "(0020,000D) Study Instance UID"),
    "series_instance_uid": ("SeriesInstanceUID", "(0020,000E) Series Instance UID"),
}


def raster_metadata(path: Path, file_sha256: str, kind: SourceKind) -> ImageMetadata:
    """JPEG/PNG: no header to trust, so identity is the content hash and the file name."""
    return ImageMetadata(kind=kind, file_sha256=file_sha256, source_name=path.name)


def dicom_metadata(
    ds: Dataset, path: Path, file_sha256: str, transfer_syntax_uid: str | None
) -> ImageMetadata:
    """Read the identifying, demographic and acquisition attributes of ``ds``."""
    uids = {field: _uid(ds, keyword, label) for field, (keyword, label) in _UIDS.items()}
    return ImageMetadata(
        kind=SourceKind.DICOM,
        file_sha256=file_sha256,
        source_name=path.name,
        accession_number=_text(ds, "AccessionNumber"),
        patient_id=_text(ds, "PatientID"),
        patient_age_years=patient_age_years(ds),
        patient_sex=_sex(ds),
        modality=_code(ds, "Modality"),
        body_part_examined=_code(ds, "BodyPartExamined"),
        view_position=_code(ds, "ViewPosition"),
        presentation_intent_type=_code(ds, "PresentationIntentType"),
        photometric_interpretation=_code(ds, "PhotometricInterpretation"),
        rows=_int(ds, "Rows"),
        columns=_int(ds, "Columns"),
        number_of_frames=_int(ds, "NumberOfFrames"),
        transfer_syntax_uid=transfer_syntax_uid,
        study_date=parse_da(_raw_text(ds, "StudyDate")),
        study_time=parse_tm(_raw_text(ds, "StudyTime")),
        institution_name=_text(ds, "InstitutionName"),
        manufacturer=_text(ds, "Manufacturer"),
        study_description=_text(ds, "StudyDescription"),
        **uids,
    )


def patient_age_years(ds: Dataset) -> float | None:
    """(0010,1010) Patient's Age (``nnnD|W|M|Y``), else Birth Date to the exam date."""
    age = parse_as(_raw_text(ds, "PatientAge"))
    if age is not None:
        return age
    birth = parse_da(_raw_text(ds, "PatientBirthDate"))
    if birth is None:
        return None
    for keyword in _EXAM_DATES:
        exam = parse_da(_raw_text(ds, keyword))
        if exam is not None and exam >= birth:
            return round((exam - birth).days / 365.25, 3)
    return None


def parse_as(value: str | None) -> float | None:
    """An Age String (PS3.5 VR AS, e.g. ``004Y``, ``018M``) in years, or None."""
    if not value:
        return None
    match = _AGE.match(value)
    if match is None:
        return None
    number, unit = int(match.group(1)), match.group(2).upper()
    return round(number * _DAYS_PER_UNIT[unit] / 365.25, 3)


def parse_da(value: str | None) -> date | None:
    """A Date (VR DA, ``YYYYMMDD``; the retired ``YYYY.MM.DD`` too), or None."""
    if not value:
        return None
    digits = value.strip().replace(".", "")
    if len(digits) != 8 or not digits.isdigit():
        return None
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return None


def parse_tm(value: str | None) -> time | None:
    """A Time (VR TM, ``HH[MM[SS[.F{1,6}]]]``; the retired ``HH:MM:SS`` too), or None."""
    if not value:
        return None
    text = value.strip().replace(":", "")
    whole, _, fraction = text.partition(".")
    if not whole.isdigit() or len(whole) not in (2, 4, 6) or (fraction and not fraction.isdigit()):
        return None
    hour, minute, second = int(whole[:2]), int(whole[2:4] or 0), int(whole[4:6] or 0)
    micro = int((fraction + "000000")[:6]) if fraction else 0
    try:
        return time(hour, minute, min(second, 59), micro)
    except ValueError:
        return None


def _raw_text(ds: Dataset, keyword: str) -> str | None:
    try:
        value: Any = ds.get(keyword)
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeError, LookupError):
        return None
    if value is None:
        return None
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else ""
    text = _CONTROL_CHARACTERS.sub("", str(value)).strip()
    # Lone surrogates (undecodable bytes) cannot be stored: keep them as visible escapes.
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text or None


#: C0 controls and DEL: never meaningful in the text VRs read here, and PostgreSQL refuses a
#: NUL inside a string, which failed a whole admission batch (issue 12).
_CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f]")


#: PS3.5 6.2 maximum lengths of the VRs stored in the worklist; a non-conformant longer
#: value is cut there rather than refused by the database later.
_VR_MAX_LENGTH = {"SH": 16, "LO": 64, "CS": 16, "PN": 64}


def _text(ds: Dataset, keyword: str) -> str | None:
    text = _raw_text(ds, keyword)
    limit = _VR_MAX_LENGTH.get(dictionary_VR(keyword))
    return text[:limit] if text and limit else text


def _code(ds: Dataset, keyword: str) -> str | None:
    text = _raw_text(ds, keyword)
    return text.upper() if text else None


def _int(ds: Dataset, keyword: str) -> int | None:
    text = _raw_text(ds, keyword)
    if text is None:
        return None
    try:
        return int(float(text))
    except ValueError:
        return None


def _sex(ds: Dataset) -> str | None:
    text = _code(ds, "PatientSex")
    return text if text in _SEXES else None


def _uid(ds: Dataset, keyword: str, label: str) -> str | None:
    text = _raw_text(ds, keyword)
    if text is not None and len(text) > UID_MAX_LENGTH:
        raise IngestError(
            Reason.CORRUPT,
            f"{label} is {len(text)} characters long; a UID holds at most {UID_MAX_LENGTH}.",
        )
    return text
