"""The triage result as a FHIR R4 DiagnosticReport, POSTed to the site's FHIR server.

One resource per exam: a ``preliminary`` DiagnosticReport, category radiology (HL7 v2-0074
``RAD`` and LOINC LP29684-5), code LOINC 18748-4 *Diagnostic imaging study*, the patient as
a logical reference by identifier (no Patient resource is created), the accession number as
an identifier of type ``ACSN`` (and in ``basedOn``, the order), the ImagingStudy as a logical
reference by its Study Instance UID (``urn:dicom:uid``), and a conclusion that says "NOT FOR
DIAGNOSTIC USE". Its observations are **contained** (``#probability``, ``#tier``, ...): one
POST carries the whole result, and no server-side id has to be resolved.

It is built as JSON and validated by ``fhir.resources``' models before it is written and
again before it is sent. ``fhir.resources`` 8 ships FHIR R5 at its root and R4B (4.3.0) and
STU3 beside it, no R4 (4.0.1): R4B's DiagnosticReport and Observation are R4's, element for
element, for everything used here, so the R4B models validate these R4 resources.

Sending (:class:`FhirNode`): ``POST [base]/DiagnosticReport`` with ``If-None-Exist:
identifier=<our id>`` (a conditional create: a retry after a lost response never makes a
second report), the bearer token from ``CXR_FHIR_TOKEN`` (environment only), one HTTP(S)
connection per batch. 200/201: delivered. 408, 429, 5xx, no answer: retried. 401/403: the
batch fails at once (the token or its rights; a person acts). Other 4xx: failed at once (the
server will not take this resource). The server's text is never kept: it may quote values.
"""

from __future__ import annotations

import http.client
import json
import logging
import ssl
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from model.prediction import Label
from pacs import codes
from pacs.statuses import Outcome, Verdict
from pacs.store import BatchResult, Outgoing, Refused, Stored, StoreError, read_each
from ris.exam import ALGORITHM_NAME, DISCLAIMER, POPULATION_CAVEAT, Exam, Finding

log = logging.getLogger(__name__)

FHIR_VERSION = "4.0.1"
CONTENT_TYPE = "application/fhir+json"
IDENTIFIER_SYSTEM = "urn:ietf:rfc:3986"  # our report id is a urn:uuid
DICOM_UID_SYSTEM = "urn:dicom:uid"
SYSTEMS = {
    "DCM": "http://dicom.nema.org/resources/ontology/DCM",
    "SCT": "http://snomed.info/sct",
    "LN": "http://loinc.org",
    # The private scheme (pacs.codes.LOCAL_SCHEME) as a URI: the OID
    # pacs.identity.derived_uid("code-system", "99CXRTRIAGE") gives, written out so it never
    # changes: under 2.25 and cxr-triage's fixed namespace UUID, so it is ours alone.
    codes.LOCAL_SCHEME: "urn:oid:2.25.61152116097634683505691244590021876598",
}
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
UCUM = "http://unitsofmeasure.org"
#: Retried answers; 401/403 fail the batch; any other status >= 400 fails the resource.
TEMPORARY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
NOT_ALLOWED = frozenset({401, 403})


@dataclass(frozen=True)
class FhirConfig:
    """Identifier systems the site's FHIR server knows its patients and orders by."""

    patient_id_system: str = ""
    accession_system: str = ""


def report_id(key: str) -> str:
    """The report's ``urn:uuid`` from a message key (:func:`ris.exam.message_key`)."""
    return f"urn:uuid:{uuid.UUID(int=int(key.rsplit('.', 1)[-1]) % (1 << 128))}"


def build_report(
    exam: Exam, finding: Finding, identifier: str, config: FhirConfig, now: datetime
) -> dict[str, Any]:
    """The DiagnosticReport (a JSON object, validated) for ``exam``."""
    if not exam.accession_number:
        raise ValueError("a DiagnosticReport for the RIS needs the exam's accession number")
    observations = _observations(finding)
    accession: dict[str, Any] = {
        "type": {"coding": [{"system": V2_0203, "code": "ACSN", "display": "Accession ID"}]},
        "value": exam.accession_number,
    }
    if config.accession_system:
        accession["system"] = config.accession_system
    patient: dict[str, Any] = {"value": exam.patient_id or "UNKNOWN"}
    if config.patient_id_system:
        patient["system"] = config.patient_id_system
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "meta": {"tag": [{"system": SYSTEMS[codes.LOCAL_SCHEME], "code": "AI-TRIAGE"}]},
        "contained": observations,
        "identifier": [{"system": IDENTIFIER_SYSTEM, "value": identifier}, accession],
        "basedOn": [{"type": "ServiceRequest", "identifier": accession}],
        "status": "preliminary",
        "category": [
            {
                "coding": [
                    {"system": V2_0074, "code": "RAD", "display": "Radiology"},
                    {"system": SYSTEMS["LN"], "code": "LP29684-5", "display": "Radiology"},
                ]
            }
        ],
        "code": {
            "coding": [
                {"system": SYSTEMS["LN"], "code": "18748-4", "display": "Diagnostic imaging study"}
            ],
            "text": f"AI pneumonia triage of a chest radiograph - {DISCLAIMER.split('.')[0]}",
        },
        "subject": {"type": "Patient", "identifier": patient},
        "issued": now.astimezone(UTC).isoformat(timespec="seconds"),
        "imagingStudy": [
            {
                "type": "ImagingStudy",
                "identifier": {
                    "system": DICOM_UID_SYSTEM,
                    "value": f"urn:oid:{exam.study_instance_uid}",
                },
            }
        ],
        "result": [{"reference": f"#{o['id']}"} for o in observations],
        "conclusion": _conclusion(finding),
    }
    effective = _effective(exam.study_datetime)
    if effective:
        report["effectiveDateTime"] = effective
    validate(report)
    return report


def _concept(code: Any) -> dict[str, Any]:
    system = SYSTEMS.get(code.scheme_designator, code.scheme_designator)
    return {"coding": [{"system": system, "code": code.value, "display": code.meaning}]}


def _observations(finding: Finding) -> list[dict[str, Any]]:
    def observation(name: str, code: Any, **value: Any) -> dict[str, Any]:
        return {
            "resourceType": "Observation",
            "id": name,
            "status": "preliminary",
            "code": _concept(code),
            "device": {"display": f"{ALGORITHM_NAME} {finding.model_version}"},
            **value,
        }

    prediction = finding.prediction
    if prediction is None:
        return [
            observation(
                "analysis",
                codes.CAD_SUMMARY,
                valueCodeableConcept=_concept(codes.NOT_ANALYSED),
                note=[{"text": f"Not analysed: {finding.not_analysed}"}],
            )
        ]
    found = [
        observation(
            "tier",
            codes.PRIORITY,
            valueCodeableConcept=_concept(codes.PRIORITY_VALUES[prediction.priority]),
        ),
        observation(
            "probability",
            codes.PROBABILITY,
            valueQuantity={
                "value": round(prediction.probability, 4),
                "unit": "1",
                "system": UCUM,
                "code": "1",
            },
            note=[{"text": DISCLAIMER}],
        ),
        observation(
            "finding",
            codes.PNEUMONIA,
            valueCodeableConcept=_concept(codes.LABEL_VALUES[Label(prediction.label)]),
        ),
    ]
    if finding.outside_population:
        found[1]["note"].append({"text": POPULATION_CAVEAT})
    return found


def _conclusion(finding: Finding) -> str:
    prediction = finding.prediction
    if prediction is None:
        return f"Not analysed: {finding.not_analysed} {DISCLAIMER}"
    words = (
        f"AI triage tier {prediction.priority.value} (pneumonia probability "
        f"{prediction.probability:.2f}, model {finding.model_version}). {DISCLAIMER}"
    )
    if finding.outside_population:
        words += f" {POPULATION_CAVEAT}."
    return words


def _effective(value: str) -> str:
    """HL7-style ``YYYYMMDD[HHMM[SS]]`` as a FHIR dateTime (a date alone without a zone)."""
    if len(value) < 8:
        return ""
    day = f"{value[:4]}-{value[4:6]}-{value[6:8]}"
    return day  # the study time has no zone in DICOM: the date is what is known for sure


class ResourceError(ValueError):
    """A resource that is not the DiagnosticReport its row says (no patient data)."""


def validate(report: dict[str, Any]) -> None:
    """Validate with ``fhir.resources`` (R4B models; see the module's note) and our own
    invariants. Raises :class:`ResourceError` with the failing element paths only."""
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport  # 0.4 s: only when used
    from pydantic import ValidationError

    try:
        DiagnosticReport.model_validate(report)
    except (ValidationError, ValueError, TypeError) as error:  # its text quotes values
        paths = sorted({".".join(str(p) for p in e.get("loc", ())) for e in _errors(error)})
        raise ResourceError(f"not a valid DiagnosticReport: {', '.join(paths)}") from None
    if report.get("status") != "preliminary":
        raise ResourceError("a triage result must be preliminary")
    if not any(o.get("resourceType") == "Observation" for o in report.get("contained", [])):
        raise ResourceError("the report has no contained Observation")


def _errors(error: Exception) -> list[dict[str, Any]]:
    errors = getattr(error, "errors", None)
    return list(errors()) if callable(errors) else [{"loc": (type(error).__name__,)}]


def encode(report: dict[str, Any]) -> bytes:
    return json.dumps(report, ensure_ascii=False, separators=(",", ":")).encode()


def _checked_report(item: Outgoing) -> bytes:
    """The report's bytes, once :func:`read_report` has read them as its row's."""
    data = item.path.read_bytes()
    read_report(data, item.sop_instance_uid)
    return data


def read_report(data: bytes, expected_id: str | None) -> dict[str, Any]:
    """Parse and validate a report file; its first identifier must be ``expected_id``."""
    if not data:
        raise ResourceError("the file is empty (0 bytes)")
    try:
        report = json.loads(data)
    except ValueError as error:
        raise ResourceError(
            f"not readable JSON of {len(data)} bytes ({type(error).__name__}); it may be truncated"
        ) from None
    if not isinstance(report, dict) or report.get("resourceType") != "DiagnosticReport":
        raise ResourceError("it is not a DiagnosticReport")
    validate(report)
    found = report.get("identifier", [{}])[0].get("value")
    if expected_id is not None and found != expected_id:
        raise ResourceError("it holds another report than its tracking row: the file was replaced")
    return report


@dataclass(frozen=True)
class FhirNode:
    """The site's FHIR server: ``base_url`` (http or https), the bearer token."""

    base_url: str
    token: str | None = field(default=None, repr=False)
    timeout_s: float = 30.0
    ca_file: Path | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the FHIR base URL must be http(s)://host[:port]/path")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError("the FHIR base URL takes no user, password, query or fragment")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")

    def __str__(self) -> str:
        parts = urlsplit(self.base_url)
        return f"FHIR {parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"

    def _connection(self) -> http.client.HTTPConnection:
        parts = urlsplit(self.base_url)
        if parts.scheme == "https":
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
            return http.client.HTTPSConnection(
                parts.hostname or "", parts.port, timeout=self.timeout_s, context=context
            )
        return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=self.timeout_s)

    def _headers(self, identifier: str | None = None) -> dict[str, str]:
        headers = {"Accept": CONTENT_TYPE, "User-Agent": "cxr-triage"}
        if identifier is not None:
            headers["Content-Type"] = f"{CONTENT_TYPE}; charset=utf-8"
            headers["If-None-Exist"] = f"identifier={IDENTIFIER_SYSTEM}|{identifier}"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _path(self, tail: str) -> str:
        return urlsplit(self.base_url).path.rstrip("/") + "/" + tail

    def send_batch(self, items: Sequence[Outgoing]) -> BatchResult:
        """POST each readable item over one connection, in order (:class:`pacs.delivery.
        Destination`). Raises :class:`StoreError` when the server cannot be reached, or
        refuses our credentials (permanent)."""
        result = BatchResult()
        ready = read_each(items, _checked_report, result, (ResourceError,))
        if not ready:
            return result
        connection = self._connection()
        try:
            for index, (item, data) in enumerate(ready):
                try:
                    status = self._post(connection, item, data)
                except (OSError, http.client.HTTPException) as error:
                    if index == 0 and not result.stored:
                        raise StoreError(f"{self}: unreachable ({_why(error)})") from error
                    words = f"no answer from the server ({_why(error)}); retried"
                    result.refused.append(
                        Refused(item.path, None, Verdict(Outcome.TEMPORARY, words))
                    )
                    result.unsent.extend(later.path for later, _ in ready[index + 1 :])
                    return result
                if status in NOT_ALLOWED:
                    raise StoreError(
                        f"{self}: HTTP {status}: the token (CXR_FHIR_TOKEN) is missing, expired "
                        "or may not create DiagnosticReports",
                        permanent=True,
                    )
                verdict = classify_status(status)
                if verdict.outcome is Outcome.STORED:
                    result.stored.append(Stored(item.path, item.sop_instance_uid or "", status))
                else:
                    result.refused.append(Refused(item.path, status, verdict))
        finally:
            connection.close()
        log.info("sent %d report(s) to %s", len(result.stored), self)
        return result

    def _post(self, connection: http.client.HTTPConnection, item: Outgoing, data: bytes) -> int:
        started = time.monotonic()
        connection.request(
            "POST",
            self._path("DiagnosticReport"),
            body=data,
            headers=self._headers(item.sop_instance_uid or ""),
        )
        response = connection.getresponse()
        response.read()  # drained, never kept: the body may quote the resource
        log.debug(
            "%s: %s answered %d in %.3f s",
            self,
            item.path.name,
            response.status,
            time.monotonic() - started,
        )
        return response.status

    def capabilities(self) -> tuple[int, str]:
        """``GET [base]/metadata`` (``ris-echo``): the status and the server's FHIR version."""
        connection = self._connection()
        try:
            connection.request("GET", self._path("metadata"), headers=self._headers())
            response = connection.getresponse()
            body = response.read(1 << 20)
        except (OSError, http.client.HTTPException) as error:
            raise StoreError(f"{self}: unreachable ({_why(error)})") from error
        finally:
            connection.close()
        version = ""
        if response.status == 200:
            try:
                version = str(json.loads(body).get("fhirVersion", ""))
            except (ValueError, AttributeError):
                version = "?"
        return response.status, version


def classify_status(status: int) -> Verdict:
    """What an HTTP answer to the POST means (401/403 are the batch's: :class:`FhirNode`)."""
    if 200 <= status < 300:
        return Verdict(Outcome.STORED, f"HTTP {status}: created (or already there)")
    if status in TEMPORARY_STATUSES or status >= 500:
        return Verdict(Outcome.TEMPORARY, f"HTTP {status}: the server is not ready (temporary)")
    if status == 412:
        return Verdict(Outcome.PERMANENT, "HTTP 412: several reports already carry this identifier")
    return Verdict(Outcome.PERMANENT, f"HTTP {status}: the server will not take this report")


def _why(error: BaseException) -> str:
    return getattr(error, "strerror", None) or type(error).__name__
