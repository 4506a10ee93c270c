"""What a RIS message says about one exam: its identifiers (from the source's header) and
the triage result (from the worklist row), in one value both HL7 and FHIR are built from.

The identifiers come from :func:`pacs.source.read_source` / :func:`pacs.not_analysed.
device_source`: the same conformant values the SR and SC carry, so the RIS, the PACS and the
worklist name the same patient and order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.valuerep import PersonName

from model.prediction import Prediction
from pacs.identity import derived_uid, outside_training_population

ALGORITHM_NAME = "cxr-triage pneumonia triage"
DISCLAIMER = (
    "NOT FOR DIAGNOSTIC USE. Research triage aid: a pneumonia probability to order the "
    "reading list; every case is still read by a radiologist."
)
POPULATION_CAVEAT = (
    "CAUTION: outside the training population (children aged 1-5): the probability may not hold"
)


@dataclass(frozen=True)
class Exam:
    """One exam's identifiers. Every field is PHI-grade: never logged."""

    accession_number: str
    patient_id: str
    issuer_of_patient_id: str
    #: DICOM PN components of the alphabetic group: family, given, middle, prefix, suffix.
    patient_name: tuple[str, str, str, str, str]
    birth_date: str  # YYYYMMDD or ""
    sex: str  # M, F, O or ""
    study_instance_uid: str
    sop_instance_uid: str
    study_datetime: str  # YYYYMMDD[HHMMSS] or ""

    @classmethod
    def of(cls, reference: Dataset) -> Exam:
        """From a reference dataset (:func:`pacs.source.reference_dataset`)."""
        name = _first(reference.get("PatientName"))
        person = PersonName(str(name)) if name else PersonName("")
        parts = (
            person.family_name,
            person.given_name,
            person.middle_name,
            person.name_prefix,
            person.name_suffix,
        )
        return cls(
            accession_number=_text(reference.get("AccessionNumber")),
            patient_id=_text(reference.get("PatientID")),
            issuer_of_patient_id=_text(reference.get("IssuerOfPatientID")),
            patient_name=tuple(str(p or "") for p in parts),  # type: ignore[arg-type]
            birth_date=_text(reference.get("PatientBirthDate")),
            sex=_text(reference.get("PatientSex")),
            study_instance_uid=str(reference.StudyInstanceUID),
            sop_instance_uid=str(reference.SOPInstanceUID),
            study_datetime=_datetime(reference.get("StudyDate"), reference.get("StudyTime")),
        )


@dataclass(frozen=True)
class Finding:
    """The result a message reports: a scored exam (``prediction``) or one not analysed
    (``not_analysed``: the sentence the "not analysed" SR gives)."""

    model_version: str
    prediction: Prediction | None = None
    not_analysed: str | None = None

    def __post_init__(self) -> None:
        if (self.prediction is None) == (self.not_analysed is None):
            raise ValueError("a finding is either a prediction or a reason not analysed")

    @property
    def outside_population(self) -> bool:
        return self.prediction is not None and outside_training_population(self.prediction)

    @property
    def kind(self) -> str:
        return "scored" if self.prediction is not None else "not-analysed"


def message_key(exam: Exam, finding: Finding, destination: str) -> str:
    """The deterministic identity of one message: the same film, model version and kind of
    result always give the same key (a redelivered results task rewrites the same message,
    a retry re-sends it under the same id), anything else another."""
    return derived_uid(destination, finding.kind, exam.sop_instance_uid, finding.model_version)


def _first(value: object) -> object:
    """The first value of a multi-valued element (a conformant reference has VM 1 anyway)."""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return value[0] if len(value) else None  # type: ignore[index, arg-type]
    return value


def _text(value: object) -> str:
    value = _first(value)
    return "" if value is None else str(value).strip()


def _datetime(date: object, time: object) -> str:
    """DICOM DA + TM -> HL7 DTM (``YYYYMMDD[HHMM[SS]]``), or "" when the date is unknown."""
    day = _text(date)
    if not re.fullmatch(r"\d{8}", day):
        return ""
    clock = re.match(r"\d{2,6}", _text(time))
    digits = clock.group(0) if clock else ""
    return day + digits[: len(digits) - len(digits) % 2]
