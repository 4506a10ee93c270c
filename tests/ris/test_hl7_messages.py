"""The ORU^R01 itself: what an interface engine reads from it, and hostile values that must
come out of the ``hl7`` library's parser exactly as they went in (delimiters, the escape
character, escape sequences written literally, CR/LF and other control characters inside
values, non-ASCII letters, very long values)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import hl7
import pytest
from pydicom.dataset import Dataset

from pacs.source import read_source
from ris import hl7v2
from ris.exam import DISCLAIMER, Exam, Finding, message_key
from ris.hl7v2 import Hl7Config, MessageError, build_oru, control_id, encode, read_message
from ris.outbox import write_messages
from tests.ris.listener import describe
from tests.ris.support import ROUTINE, SUSPECT, URGENT, chest_dicom, output

NOW = datetime(2026, 12, 14, 9, 30, 5, tzinfo=UTC)

HOSTILE = [
    "O'Brien|Smith",
    "A^B^C",
    "Tom & Jerry",
    "rep~eat",
    "back\\slash",
    "\\F\\ literally \\E\\ and \\X0D\\",
    "line\r\nbreak\nand\rcr",
    "tab\there\x0bVT\x1cFS\x00nul\x7fdel",
    "Zoë Ñúñez Øster Łukasz",
    "山田 太郎 김민준 Иван",
    "emoji 🫁 lungs",
    "MSH|^~\\&|EVIL|||||||ORU^R01|X|P|2.5.1\rPID|1||INJECTED",
    "x" * 10_000,
    "   spaces kept   ",
]


def reference(**values: str) -> Dataset:
    ds = Dataset()
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.PatientName = "Family^Given^Middle^Dr^Jr"
    ds.PatientID = "PID-1"
    ds.AccessionNumber = "ACC-1"
    ds.StudyDate = "20261213"
    ds.StudyTime = "101112.123"
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def exam_with(**fields: object) -> Exam:
    base = Exam.of(reference())
    return Exam(**{**base.__dict__, **fields})


def roundtrip(exam: Exam, finding: Finding, config: Hl7Config | None = None) -> dict:  # type: ignore[type-arg]
    config = config or Hl7Config()
    ident = control_id(message_key(exam, finding, "hl7"))
    data = encode(build_oru(exam, finding, config, ident, NOW), config)
    for forbidden in (b"\x0b", b"\x1c", b"\n"):  # MLLP framing and LF never inside
        assert forbidden not in data
    assert data.count(b"\r") == len(hl7.parse(data.decode(config.codec)))  # one per segment
    return describe(read_message(data, config.codec, ident))


def test_the_oru_says_tier_probability_model_and_not_for_diagnostic_use() -> None:
    exam = Exam.of(reference())
    got = roundtrip(exam, Finding("fake-1.0", URGENT))
    assert got["message_type"] == "ORU^R01"
    assert (got["accession"], got["accession_orc"], got["accession_obr18"]) == ("ACC-1",) * 3
    assert got["result_status"] == "P" and got["obx_status"] == ["P"]
    assert got["tier"] == "103391001" and float(got["probability"]) == pytest.approx(0.8731)
    assert got["model_version"] == "fake-1.0"
    assert DISCLAIMER in got["comments"] and "NOT FOR DIAGNOSTIC USE" in DISCLAIMER
    assert got["study_instance_uid"] == exam.study_instance_uid
    assert got["charset"] == "UNICODE UTF-8"
    assert (got["family_name"], got["given_name"], got["middle_name"]) == (
        "Family",
        "Given",
        "Middle",
    )
    tiers = {
        p.priority.value: roundtrip(exam, Finding("fake-1.0", p))["tier"]
        for p in (SUSPECT, ROUTINE)
    }
    assert tiers == {"suspect": "SUSPECT", "routine": "50811001"}


def test_a_film_not_analysed_says_so_and_gives_no_probability() -> None:
    got = roundtrip(Exam.of(reference()), Finding("fake-1.0", not_analysed="blank image"))
    assert got["analysis"] == "111245" and got["tier"] == "" and got["probability"] == ""
    assert "Not analysed: blank image" in got["comments"] and DISCLAIMER in got["comments"]


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_values_round_trip_through_the_library_parser(value: str) -> None:
    exam = exam_with(
        patient_name=(value, value, value, "", ""),
        patient_id=value,
        issuer_of_patient_id=value,
        accession_number=value,
    )
    got = roundtrip(exam, Finding("fake-1.0", URGENT))
    for key in ("family_name", "given_name", "middle_name", "patient_id", "issuer"):
        assert got[key] == value, key
    assert got["accession"] == got["accession_orc"] == got["accession_obr18"] == value
    assert got["tier"] == "103391001" and float(got["probability"]) == pytest.approx(0.8731)
    assert got["message_type"] == "ORU^R01"  # an injected MSH never became a segment


@pytest.mark.parametrize("value", HOSTILE[:6] + HOSTILE[8:9], ids=range(7))
def test_hostile_model_versions_and_msh_settings_round_trip(value: str) -> None:
    config = Hl7Config(sending_application=value.replace("^", "-"), receiving_application="RIS")
    got = roundtrip(Exam.of(reference()), Finding(value, URGENT), config)
    assert got["model_version"] == value
    assert got["sending_application"] == value.replace("^", "-")


def test_a_latin_1_or_ascii_ris_gets_what_its_charset_can_carry() -> None:
    exam = exam_with(patient_name=("Zoë", "山田", "", "", ""))
    latin = roundtrip(exam, Finding("m", URGENT), Hl7Config(charset="8859/1"))
    assert (latin["charset"], latin["family_name"], latin["given_name"]) == (
        "8859/1",
        "Zoë",
        "??",
    )
    ascii_ = roundtrip(exam, Finding("m", URGENT), Hl7Config(charset="ASCII"))
    assert (ascii_["charset"], ascii_["family_name"]) == ("", "Zo?")


def test_control_ids_are_unique_per_film_model_and_kind_and_stable() -> None:
    exam = Exam.of(reference())
    other = exam_with(sop_instance_uid="1.2.826.0.1.3680043.8.498.3")
    ids = {
        control_id(message_key(e, f, "hl7"))
        for e in (exam, other)
        for f in (Finding("a", URGENT), Finding("b", URGENT), Finding("a", not_analysed="x"))
    }
    assert len(ids) == 6 and all(len(i) == 20 and i.isalnum() for i in ids)
    assert control_id(message_key(exam, Finding("a", URGENT), "hl7")) in ids  # the same again


def test_the_pn_components_of_a_dicom_name_become_the_xpn_components(tmp_path: Path) -> None:
    source = chest_dicom(tmp_path / "a.dcm", 1, PatientName="Müller-Lüdenscheidt^Zoë^A^Dr^Jr")
    [written] = write_messages(
        output(tmp_path / "outbox"), read_source(source), Finding("m", URGENT), NOW
    )
    message = read_message(Path(written.path).read_bytes(), "utf-8", written.sop_instance_uid)
    xpn = [str(message[f"PID.F5.R1.C{i}"]) for i in range(1, 6)]
    assert xpn == ["Müller-Lüdenscheidt", "Zoë", "A", "Jr", "Dr"]  # XPN: suffix, then prefix
    assert Path(written.path).name == f"HL7_{written.sop_instance_uid}.hl7"


def test_an_exam_without_an_accession_number_gets_no_message(tmp_path: Path) -> None:
    source = chest_dicom(tmp_path / "a.dcm", 1, AccessionNumber="")
    ris = output(tmp_path / "outbox", fhir=True)
    assert write_messages(ris, read_source(source), Finding("m", URGENT), NOW) == []


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda d: b"", "empty"),
        (lambda d: d[: len(d) // 2], "truncated"),
        (lambda d: d[:-40], "truncated"),
        (lambda d: b"\x00\xff" * 50, "not a readable HL7 message"),
        (lambda d: d.replace(b"ORU^R01", b"ADT^A08"), r"not an ORU\^R01"),
    ],
)
def test_a_damaged_message_file_is_refused_before_sending(damage, words: str) -> None:
    exam = Exam.of(reference())
    ident = control_id(message_key(exam, Finding("m", URGENT), "hl7"))
    data = encode(build_oru(exam, Finding("m", URGENT), Hl7Config(), ident, NOW), Hl7Config())
    with pytest.raises(MessageError, match=words):
        read_message(damage(data), "utf-8", ident)
    with pytest.raises(MessageError, match="the file was replaced"):
        read_message(data, "utf-8", "CXR0000000000000000")


def test_a_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="charset"):
        Hl7Config(charset="UTF-16")
    with pytest.raises(ValueError, match="processing_id"):
        Hl7Config(processing_id="X")
    assert hl7v2.escape(hl7.Message(separators="\r|~^&"), "") == ""
