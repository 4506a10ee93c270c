"""FHIR R4: the DiagnosticReport as the resource models validate it, and its delivery to a
recording FHIR endpoint in its own process (no FHIR server installs here: see
:mod:`tests.ris.fhir_server`) through the same loop as the SR/SC: bearer token, conditional
create (a re-send never makes a second report), 5xx retried, 401 failing the batch, 400
failing the report."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic_settings import SettingsError
from pydicom.dataset import Dataset
from sqlalchemy import select

from db.models import ResultKind, ResultObject, ResultState, utcnow
from db.results import requeue
from pacs.delivery import REFUSED_BY_RIS as REFUSED
from pacs.delivery import RIS_REJECTED as ASSOCIATION_REJECTED
from pacs.delivery import Deliverer, DeliveryPolicy
from ris.exam import DISCLAIMER, Exam, Finding, message_key
from ris.fhir import FhirConfig, FhirNode, ResourceError, build_report, read_report, report_id
from tests.ris.support import ROUTINE, URGENT, add_exams, fhir_server, output
from tests.ris.test_hl7_messages import HOSTILE, reference
from tests.support import free_port
from worker.settings import SettingsFileError, get_settings

TOKEN = "s3cret-token-for-tests"
NOW = datetime(2026, 12, 14, 9, 30, tzinfo=UTC)


def fhir_objects(sessions) -> dict[int, ResultObject]:
    with sessions() as session:
        rows = session.scalars(select(ResultObject).where(ResultObject.kind == ResultKind.FHIR))
        return {o.entry_id: o for o in rows}


def loop_for(sessions, port: int, token: str = TOKEN) -> Deliverer:
    node = FhirNode(f"http://127.0.0.1:{port}/fhir", token=token, timeout_s=10)
    policy = DeliveryPolicy(drain_in_order=True, reconnect_max_s=1.0)
    return Deliverer(sessions, node, policy, kinds=(ResultKind.FHIR,))


def test_the_report_is_a_preliminary_radiology_report_with_its_observations() -> None:
    exam = Exam.of(reference())
    finding = Finding("fake-1.0", URGENT)
    ident = report_id(message_key(exam, finding, "fhir"))
    report = build_report(exam, finding, ident, FhirConfig("urn:oid:1.2.3", "urn:oid:4.5"), NOW)
    assert report["status"] == "preliminary"
    assert {c["code"] for c in report["category"][0]["coding"]} == {"RAD", "LP29684-5"}
    assert report["subject"]["identifier"] == {"system": "urn:oid:1.2.3", "value": "PID-1"}
    accession = report["identifier"][1]
    assert accession["value"] == "ACC-1" and accession["type"]["coding"][0]["code"] == "ACSN"
    assert report["basedOn"][0]["identifier"] == accession
    study = report["imagingStudy"][0]["identifier"]
    assert study["value"] == f"urn:oid:{exam.study_instance_uid}"
    assert "NOT FOR DIAGNOSTIC USE" in report["conclusion"]
    observations = {o["id"]: o for o in report["contained"]}
    assert observations["probability"]["valueQuantity"]["value"] == pytest.approx(0.8731)
    tier = observations["tier"]["valueCodeableConcept"]["coding"][0]
    assert (tier["system"], tier["code"]) == ("http://snomed.info/sct", "103391001")
    assert [r["reference"] for r in report["result"]] == ["#tier", "#probability", "#finding"]
    assert report["effectiveDateTime"] == "2026-12-13"
    assert DISCLAIMER in observations["probability"]["note"][0]["text"]


def test_hostile_values_survive_the_json_and_the_models() -> None:
    for value in HOSTILE:
        exam = Exam(
            **{**Exam.of(reference()).__dict__, "patient_id": value, "accession_number": value}
        )
        ident = report_id(message_key(exam, Finding("m", URGENT), "fhir"))
        from ris.fhir import encode

        data = encode(build_report(exam, Finding("m", URGENT), ident, FhirConfig(), NOW))
        report = read_report(data, ident)
        assert report["subject"]["identifier"]["value"] == value
        assert report["identifier"][1]["value"] == value


def test_an_invalid_or_replaced_report_file_is_refused() -> None:
    with pytest.raises(ResourceError, match="empty"):
        read_report(b"", None)
    with pytest.raises(ResourceError, match="truncated"):
        read_report(b'{"resourceType": "DiagnosticRep', None)
    with pytest.raises(ResourceError, match="not a valid DiagnosticReport: status"):
        read_report(b'{"resourceType": "DiagnosticReport", "code": {"text": "x"}}', None)
    exam = Exam.of(reference())
    ident = report_id(message_key(exam, Finding("m", URGENT), "fhir"))
    from ris.fhir import encode

    data = encode(build_report(exam, Finding("m", URGENT), ident, FhirConfig(), NOW))
    with pytest.raises(ResourceError, match="replaced"):
        read_report(data, "urn:uuid:00000000-0000-0000-0000-000000000000")


def test_reports_are_created_once_with_the_token_and_a_resend_creates_nothing(
    sessions, tmp_path: Path
) -> None:
    ris = output(tmp_path / "outbox", hl7=False, fhir=True)
    ids = add_exams(sessions, tmp_path, [ROUTINE, URGENT], ris)
    with fhir_server(free_port(), tmp_path / "fhir.jsonl", TOKEN) as server:
        report = loop_for(sessions, server.port).deliver_once()
        assert report.stored == 2
        with sessions.begin() as session:
            assert (
                requeue(
                    session,
                    utcnow(),
                    entry_id=ids[0],
                    include_stored=True,
                    kinds=(ResultKind.FHIR,),
                )
                == 1
            )
        assert loop_for(sessions, server.port).deliver_once().stored == 1
        got = server.messages()
    assert [g["status"] for g in got] == [201, 201, 200]  # the re-send met its own report
    assert [g["resource"]["identifier"][1]["value"] for g in got[:2]] == ["ACC00001", "ACC00000"]
    assert all(g["token"] == f"Bearer {TOKEN}" for g in got)
    assert all(g["content_type"].startswith("application/fhir+json") for g in got)
    assert (
        got[2]["if_none_exist"]
        == f"identifier=urn:ietf:rfc:3986|{fhir_objects(sessions)[ids[0]].sop_instance_uid}"
    )


@pytest.mark.parametrize(
    ("answers", "state", "reason"),
    [
        ("503", ResultState.PENDING, None),
        ("429", ResultState.PENDING, None),
        ("400", ResultState.FAILED, REFUSED),
        ("422", ResultState.FAILED, REFUSED),
        ("401", ResultState.FAILED, ASSOCIATION_REJECTED),
        ("403", ResultState.FAILED, ASSOCIATION_REJECTED),
    ],
)
def test_each_http_answer_is_retried_or_failed_by_rule(
    sessions, tmp_path: Path, answers: str, state: ResultState, reason
) -> None:
    ris = output(tmp_path / "outbox", hl7=False, fhir=True)
    [entry_id] = add_exams(sessions, tmp_path, [URGENT], ris)
    with fhir_server(free_port(), tmp_path / "fhir.jsonl", TOKEN, answers) as server:
        loop_for(sessions, server.port).deliver_once()
    obj = fhir_objects(sessions)[entry_id]
    assert (obj.state, obj.reason) == (state, reason)
    assert f"HTTP {answers}" in (obj.last_error or "")
    assert TOKEN not in (obj.last_error or "")


def test_a_wrong_token_fails_the_batch_and_the_server_keeps_nothing(
    sessions, tmp_path: Path
) -> None:
    ris = output(tmp_path / "outbox", hl7=False, fhir=True)
    add_exams(sessions, tmp_path, [URGENT, ROUTINE], ris)
    with fhir_server(free_port(), tmp_path / "fhir.jsonl", TOKEN) as server:
        report = loop_for(sessions, server.port, token="wrong").deliver_once()
        assert [g["status"] for g in server.messages()] == [401]
    assert report.failed == 2
    assert {o.reason for o in fhir_objects(sessions).values()} == {ASSOCIATION_REJECTED}


def test_the_token_comes_from_the_environment_only(tmp_path: Path, monkeypatch) -> None:
    settings_file = tmp_path / "cxr.env"
    settings_file.write_text(f"CXR_FHIR_BASE_URL=https://fhir.example/r4\nCXR_FHIR_TOKEN={TOKEN}\n")
    monkeypatch.setenv("CXR_SETTINGS_FILE", str(settings_file))
    get_settings.cache_clear()
    with pytest.raises(SettingsError) as raised:
        get_settings()
    assert isinstance(raised.value.__cause__, SettingsFileError)
    assert "fhir_token is a secret" in str(raised.value.__cause__)
    settings_file.write_text("CXR_FHIR_BASE_URL=https://user:pw@fhir.example/r4\n")
    get_settings.cache_clear()
    with pytest.raises(SettingsError) as raised:
        get_settings()
    assert "password" in str(raised.value.__cause__)
    get_settings.cache_clear()
    monkeypatch.delenv("CXR_SETTINGS_FILE")
    monkeypatch.setenv("CXR_FHIR_TOKEN", TOKEN)
    assert get_settings().fhir_token.get_secret_value() == TOKEN  # type: ignore[union-attr]
    assert TOKEN not in repr(get_settings())
    get_settings.cache_clear()


def test_a_base_url_with_credentials_or_odd_scheme_is_refused() -> None:
    for url in ("ftp://fhir/r4", "https://u:p@fhir/r4", "https://fhir/r4?token=x", "fhir/r4"):
        with pytest.raises(ValueError, match="FHIR base URL"):
            FhirNode(url)
    assert TOKEN not in repr(FhirNode("https://fhir/r4", token=TOKEN))


def test_no_reference_needed_for_a_dataset_without_name() -> None:
    ds = Dataset()
    ds.StudyInstanceUID, ds.SOPInstanceUID, ds.AccessionNumber = "1.2", "1.2.3", "A1"
    exam = Exam.of(ds)
    assert exam.patient_name == ("", "", "", "", "") and exam.study_datetime == ""
