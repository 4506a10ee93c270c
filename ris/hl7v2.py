"""The ORU^R01 (HL7 v2.5.1) that tells the RIS an exam's triage result, by accession number.

Built with the ``hl7`` library's containers, never by joining strings: every value is put
in its field, component or subcomponent with :meth:`hl7.Segment.assign_field` after
:func:`escape`, so a name or an identifier holding ``|``, ``^``, ``&``, ``~``, ``\\``, CR/LF or
any other control character arrives as the same characters (HL7 2.7 "escape sequences":
``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\`` and ``\\Xhh\\``). Text beyond ASCII is sent as it is, in the
character set MSH-18 declares (UTF-8 unless configured); a character that set cannot carry
becomes ``?``.

The message (segment by segment, what an interface engine maps: README "RIS integration"):

- MSH: MSH-3/4 us, MSH-5/6 the RIS (configurable), MSH-7 when built, MSH-9 ``ORU^R01^ORU_R01``,
  MSH-10 a control id derived from the film and model version (unique, the same on every
  retry of the message), MSH-11 processing id, MSH-12 ``2.5.1``, MSH-18 the character set;
  original acknowledgement mode (MSH-15/16 empty): the RIS answers each message with an ACK.
- PID: PID-3 patient ID ``^^^`` issuer, PID-5 name (DICOM family^given^middle^prefix^suffix
  as XPN family^given^middle^suffix^prefix), PID-7 birth date, PID-8 sex.
- ORC: ORC-1 ``RE`` (observations to follow), ORC-3 the accession number (filler order).
- OBR: OBR-3 and OBR-18 the accession number (the filler order number, and IHE's place for
  it), OBR-4 Plain chest X-ray (SCT 399208008), OBR-7 the study date/time, OBR-22 when the
  result was made, OBR-24 ``RAD``, OBR-25 ``P`` (preliminary).
- OBX, each with OBX-11 ``P``: the tier (SCT 260870009 Priority: urgent SCT 103391001,
  routine SCT 50811001, suspect 99CXRTRIAGE SUSPECT), the probability (DCM 122157, NM, unit
  UCUM ``1``), the finding (SCT 233604007 Pneumonia: present/absent), the threshold (DCM
  122411), the algorithm name and version (DCM 111001, 111003), "NOT FOR DIAGNOSTIC USE"
  (DCM 121106 Comment, TX), the population caveat when flagged, and the Study Instance UID
  (DCM 110180). A film not analysed gets DCM 111017 = 111245 "No algorithms succeeded" and
  the reason in words instead of the tier and probability.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import hl7
from highdicom.sr import CodedConcept

from model.prediction import Label
from pacs import codes
from ris.exam import ALGORITHM_NAME, DISCLAIMER, POPULATION_CAVEAT, Exam, Finding

VERSION = "2.5.1"
SEPARATORS = "\r|~^&"  # segment, field, repetition, component, subcomponent
ESCAPE = "\\"
#: MSH-18 values (HL7 table 0211) and the Python codec each means.
CHARSETS = {"UNICODE UTF-8": "utf-8", "8859/1": "latin-1", "ASCII": "ascii"}
PROCESSING_IDS = ("P", "T", "D")  # production, training (test), debugging
CONTROL_ID_LENGTH = 20  # MSH-10 fits the 20 characters of v2.3 receivers too
#: HL7 table 0396 coding system names.
SYSTEMS = {"DCM": "DCM", "SCT": "SCT", "UCUM": "UCUM", codes.LOCAL_SCHEME: codes.LOCAL_SCHEME}
ALGORITHM_NAME_CODE = CodedConcept("111001", "DCM", "Algorithm Name")
ALGORITHM_VERSION_CODE = CodedConcept("111003", "DCM", "Algorithm Version")
STUDY_INSTANCE_UID_CODE = CodedConcept("110180", "DCM", "Study Instance UID")
#: Control characters (and DEL) as hex escapes: the library's own escape writes them with a
#: space for the leading zero, and CR as the formatting command ``\.br\``; these round-trip.
_CONTROL = {chr(c): f"X{c:02X}" for c in (*range(0x20), 0x7F)}


@dataclass(frozen=True)
class Hl7Config:
    """The MSH fields an interface analyst sets (each may hold HD components: ``A^1.2^ISO``)."""

    sending_application: str = "CXR_TRIAGE"
    sending_facility: str = ""
    receiving_application: str = "RIS"
    receiving_facility: str = ""
    processing_id: str = "P"
    charset: str = "UNICODE UTF-8"

    def __post_init__(self) -> None:
        if self.charset not in CHARSETS:
            raise ValueError(f"charset must be one of {', '.join(CHARSETS)}")
        if self.processing_id not in PROCESSING_IDS:
            raise ValueError(f"processing_id must be one of {', '.join(PROCESSING_IDS)}")

    @property
    def codec(self) -> str:
        return CHARSETS[self.charset]


def control_id(key: str) -> str:
    """MSH-10 from a message key (:func:`ris.exam.message_key`, a ``2.25.<integer>`` UID):
    ``CXR`` and 17 base-36 digits of it, so one film's message keeps its id on every try."""
    number = int(key.rsplit(".", 1)[-1])
    digits = ""
    for _ in range(CONTROL_ID_LENGTH - 3):
        number, digit = divmod(number, 36)
        digits += "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[digit]
    return "CXR" + digits


def escape(message: hl7.Message, value: str, codec: str = "utf-8") -> str:
    """``value`` escaped for one field, component or subcomponent of ``message``.

    ASCII goes through the library's :meth:`hl7.Message.escape` (delimiters, the escape
    character, control characters as ``\\Xhh\\``); other characters are kept as they are
    (MSH-18 declares them), or ``?`` where ``codec`` cannot encode them.
    """
    out: list[str] = []
    for run in re.split(r"([^\x00-\x7f]+)", value):
        if not run:
            continue
        if run.isascii():
            out.append(message.escape(run, app_map=_CONTROL))
        else:
            out.append(run.encode(codec, errors="replace").decode(codec))
    return "".join(out)


def build_oru(
    exam: Exam, finding: Finding, config: Hl7Config, message_id: str, now: datetime
) -> hl7.Message:
    """The ORU^R01 for ``exam``; ``message_id`` is MSH-10 (:func:`control_id`)."""
    if not exam.accession_number:
        raise ValueError("an ORU^R01 needs the exam's accession number")
    message = hl7.Message(separators=SEPARATORS, esc=ESCAPE, factory=hl7.Factory)
    put = _Writer(message, config.codec)
    timestamp = now.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")

    msh = put.segment("MSH")
    msh.assign_field("|", 1)
    msh.assign_field("^~\\&", 2)
    for position, value in (
        (3, config.sending_application),
        (4, config.sending_facility),
        (5, config.receiving_application),
        (6, config.receiving_facility),
    ):
        put.components(msh, position, value.split("^"))
    put.value(msh, timestamp, 7)
    put.components(msh, 9, ("ORU", "R01", "ORU_R01"))
    put.value(msh, message_id, 10)
    put.value(msh, config.processing_id, 11)
    put.value(msh, VERSION, 12)
    if config.charset != "ASCII":
        put.value(msh, config.charset, 18)

    pid = put.segment("PID")
    put.value(pid, "1", 1)
    put.components(pid, 3, (exam.patient_id, "", "", exam.issuer_of_patient_id))
    family, given, middle, prefix, suffix = exam.patient_name
    put.components(pid, 5, (family, given, middle, suffix, prefix))
    put.value(pid, exam.birth_date, 7)
    put.value(pid, exam.sex, 8)

    orc = put.segment("ORC")
    put.value(orc, "RE", 1)
    put.value(orc, exam.accession_number, 3)

    obr = put.segment("OBR")
    put.value(obr, "1", 1)
    put.value(obr, exam.accession_number, 3)
    put.coded(obr, 4, codes.PLAIN_CHEST_XRAY)
    put.value(obr, exam.study_datetime, 7)
    put.value(obr, exam.accession_number, 18)
    put.value(obr, timestamp, 22)
    put.value(obr, "RAD", 24)
    put.value(obr, "P", 25)

    observations = _observations(exam, finding)
    for index, (value_type, code, observed, units) in enumerate(observations, start=1):
        obx = put.segment("OBX")
        put.value(obx, str(index), 1)
        put.value(obx, value_type, 2)
        put.coded(obx, 3, code)
        if isinstance(observed, CodedConcept):
            put.coded(obx, 5, observed)
        else:
            put.value(obx, observed, 5)
        if units:
            put.components(obx, 6, ("1", "no units", "UCUM"))
        put.value(obx, "P", 11)
        put.value(obx, timestamp, 14)
    return message


_Observation = tuple[str, CodedConcept, "str | CodedConcept", bool]


def _observations(exam: Exam, finding: Finding) -> list[_Observation]:
    rows: list[_Observation] = []
    prediction = finding.prediction
    if prediction is not None:
        rows += [
            ("CWE", codes.PRIORITY, codes.PRIORITY_VALUES[prediction.priority], False),
            ("NM", codes.PROBABILITY, f"{prediction.probability:.4f}", True),
            ("CWE", codes.PNEUMONIA, codes.LABEL_VALUES[Label(prediction.label)], False),
            ("NM", codes.THRESHOLD, f"{prediction.threshold:.4f}", True),
        ]
    else:
        rows += [
            ("CWE", codes.CAD_SUMMARY, codes.NOT_ANALYSED, False),
            ("TX", codes.COMMENT, f"Not analysed: {finding.not_analysed}", False),
        ]
    rows += [
        ("ST", ALGORITHM_NAME_CODE, ALGORITHM_NAME, False),
        ("ST", ALGORITHM_VERSION_CODE, finding.model_version, False),
        ("TX", codes.COMMENT, DISCLAIMER, False),
    ]
    if finding.outside_population:
        rows.append(("TX", codes.COMMENT, POPULATION_CAVEAT, False))
    rows.append(("ST", STUDY_INSTANCE_UID_CODE, exam.study_instance_uid, False))
    return rows


class _Writer:
    """Puts escaped values into new segments of one message."""

    def __init__(self, message: hl7.Message, codec: str) -> None:
        self.message = message
        self.codec = codec

    def segment(self, name: str) -> hl7.Segment:
        segment = self.message.create_segment([self.message.create_field([name])])
        self.message.append(segment)
        return segment

    def value(self, segment: hl7.Segment, value: str, field: int) -> None:
        if value:
            segment.assign_field(escape(self.message, value, self.codec), field)

    def components(self, segment: hl7.Segment, field: int, values: tuple[str, ...] | list[str]):  # type: ignore[no-untyped-def]
        for index, value in enumerate(values, start=1):
            if value:
                segment.assign_field(escape(self.message, value, self.codec), field, 1, index)

    def coded(self, segment: hl7.Segment, field: int, code: CodedConcept) -> None:
        system = SYSTEMS.get(code.scheme_designator, code.scheme_designator)
        self.components(segment, field, (code.value, code.meaning, system))


def encode(message: hl7.Message, config: Hl7Config) -> bytes:
    """The message's bytes in its declared character set (segments end with CR)."""
    return str(message).encode(config.codec, errors="replace")


class MessageError(ValueError):
    """An outbox file is not the HL7 message its tracking row says (no patient data)."""


def read_message(data: bytes, codec: str, expected_id: str | None) -> hl7.Message:
    """Parse a message file back with the library and check it: an ORU^R01 whose MSH-10 is
    ``expected_id`` (when given). Raises :class:`MessageError`, never another error."""
    if not data:
        raise MessageError("the file is empty (0 bytes)")
    try:
        text = data.decode(codec)
        message = hl7.parse(text)
        kind = (str(message["MSH.F9.R1.C1"]), str(message["MSH.F9.R1.C2"]))
        found = str(message["MSH.F10"])
        message.segment("OBR")
        last = message[-1]
        complete = text.endswith("\r") and str(last[0]) == "OBX"
        complete = complete and str(last(3)).split("^")[0] == STUDY_INSTANCE_UID_CODE.value
    except Exception as error:  # whatever a broken file makes the parser raise
        raise MessageError(
            f"not a readable HL7 message of {len(data)} bytes ({type(error).__name__}); it "
            "may be truncated"
        ) from error
    if not complete:
        raise MessageError(f"the message of {len(data)} bytes ends early: it was truncated")
    if kind != ("ORU", "R01"):
        raise MessageError("it is not an ORU^R01 message")
    if expected_id is not None and found != expected_id:
        raise MessageError("it holds another message than its tracking row: the file was replaced")
    return message
