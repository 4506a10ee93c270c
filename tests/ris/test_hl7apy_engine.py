"""The ORU^R01 against a second, independent HL7 implementation acting as the RIS: hl7apy's
MLLP server parses each message against the v2.5.1 ORU_R01 structure and data types at
STRICT validation and answers AA only for a valid one; it closes the connection after each
ACK, as several interface engines do, and the sender carries on over a new connection."""

from __future__ import annotations

from pathlib import Path

from db.models import ResultState
from tests.ris.support import ROUTINE, SUSPECT, URGENT, add_exams, hl7apy_engine
from tests.ris.test_mllp_delivery import hl7_objects, loop_for
from tests.support import free_port


def test_hl7apy_validates_every_message_strictly_and_acknowledges_it(sessions, tmp_path: Path):
    names = ["O'Brien|Smith^Zoë", "Tom & Jerry^山田", "back\\slash~x^Ñúñez", "Plain^Name"]
    tiers = [URGENT, SUSPECT, ROUTINE, URGENT]
    for index, (name, prediction) in enumerate(zip(names, tiers, strict=True)):
        add_exams(
            sessions, tmp_path, [prediction], start=index, PatientName=name, IssuerOfPatientID="H"
        )
    with hl7apy_engine(free_port(), tmp_path / "engine.jsonl") as engine:
        report = loop_for(sessions, engine.port).deliver_once()
        got = engine.messages()
    assert [g["valid"] for g in got] == [True] * 4, got
    assert report.stored == 4 and report.retrying == 0  # one pass, a connection per ACK
    assert sorted(g["accession"] for g in got) == [f"ACC{i:05d}" for i in range(4)]
    assert {g["charset"] for g in got} == {"UNICODE UTF-8"}
    assert all(o.state is ResultState.STORED for o in hl7_objects(sessions).values())


def test_a_not_analysed_message_is_valid_too(sessions, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from db.models import utcnow
    from db.results import record_written
    from db.worklist import Arrival, admit
    from pacs.source import read_source
    from ris.exam import Finding
    from ris.outbox import write_messages
    from tests.ris.support import chest_dicom, output

    source = chest_dicom(tmp_path / "a.dcm", 1)
    finding = Finding("fake-1.0", not_analysed="the image holds no usable picture")
    written = write_messages(
        output(tmp_path / "outbox"), read_source(source), finding, datetime.now(UTC)
    )
    with sessions.begin() as session:
        entry, _ = admit(session, Arrival("1" * 64, "a.dcm", str(source), "dicom"))
        record_written(session, entry.id, written, utcnow())
    with hl7apy_engine(free_port(), tmp_path / "engine.jsonl") as engine:
        assert loop_for(sessions, engine.port).deliver_once().stored == 1
        [got] = engine.messages()
    assert got["valid"] is True
