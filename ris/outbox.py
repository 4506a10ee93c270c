"""The RIS messages of one exam, written to ``<outbox>/ris/`` by the results task.

Like the SR and SC (:mod:`pacs.outbox`), each message is built once, written under a
temporary name, read back and checked with the same parser the sender uses, then renamed
into place: the delivery loop only ever sends a whole message, and a retry sends the very
bytes of the first try (MSH-10 and MSH-7 included). File names are the message ids
(``HL7_<MSH-10>.hl7``, ``FHIR_<uuid>.json``): no patient data in a name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydicom.dataset import Dataset

from db.models import ResultKind
from db.results import WrittenObject
from ris import fhir, hl7v2
from ris.exam import Exam, Finding, message_key

FOLDER = "ris"
HL7_PREFIX = "HL7_"
FHIR_PREFIX = "FHIR_"


@dataclass(frozen=True)
class RisOutput:
    """Where the messages go and which are made (``None``: that destination is off)."""

    outbox: Path
    hl7: hl7v2.Hl7Config | None = None
    fhir: fhir.FhirConfig | None = None

    @property
    def folder(self) -> Path:
        return self.outbox / FOLDER

    @property
    def enabled(self) -> bool:
        return self.hl7 is not None or self.fhir is not None


class MessageWriteError(RuntimeError):
    """A written message did not read back as written (nothing was renamed)."""


def write_messages(
    output: RisOutput, reference: Dataset, finding: Finding, now: datetime
) -> list[WrittenObject]:
    """Write the exam's messages (HL7 and/or FHIR, as configured). An exam without an
    accession number gets none (``[]``): the RIS could not place it."""
    exam = Exam.of(reference)
    if not output.enabled or not exam.accession_number:
        return []
    output.folder.mkdir(parents=True, exist_ok=True)
    written: list[WrittenObject] = []
    if output.hl7 is not None:
        control = hl7v2.control_id(message_key(exam, finding, "hl7"))
        message = hl7v2.build_oru(exam, finding, output.hl7, control, now)
        data = hl7v2.encode(message, output.hl7)
        path = output.folder / f"{HL7_PREFIX}{control}.hl7"
        codec = output.hl7.codec
        _write(path, data, lambda d: hl7v2.read_message(d, codec, control))
        written.append(WrittenObject(ResultKind.HL7, control, str(path)))
    if output.fhir is not None:
        identifier = fhir.report_id(message_key(exam, finding, "fhir"))
        report = fhir.build_report(exam, finding, identifier, output.fhir, now)
        path = output.folder / f"{FHIR_PREFIX}{identifier.rsplit(':', 1)[-1]}.json"
        _write(path, fhir.encode(report), lambda d: fhir.read_report(d, identifier))
        written.append(WrittenObject(ResultKind.FHIR, identifier, str(path)))
    return written


def _write(path: Path, data: bytes, check) -> None:  # type: ignore[no-untyped-def]
    partial = path.with_name(f".{path.name}.part")
    partial.write_bytes(data)
    try:
        check(partial.read_bytes())
    except ValueError as error:
        partial.unlink(missing_ok=True)
        raise MessageWriteError(f"{path.name} does not read back: {error}") from error
    partial.replace(path)
