"""End to end: a DICOM with an accession number dropped in the inbox reaches the RIS as an
ORU^R01 that a real MLLP listener process parses and acknowledges, with the right accession,
tier and probability.

The fast test runs the real intake, pipeline (with the fake scorer of ``tests/fakes.py``:
the model is not the point), results task and delivery loop in this process; the ``tf`` one
runs ``cxr-triage run`` with the real model, the listener as the RIS."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import ResultKind, ResultObject, ResultState, Status, WorklistEntry
from ingest.watcher import Origin
from pacs.delivery import Deliverer, DeliveryPolicy
from tests.corpus import cr_dicom, dataset_jpegs
from tests.fakes import FakeScorer
from tests.processes import rows, running
from tests.ris.support import chest_dicom, listener
from tests.support import free_port, wait_until
from worker.destinations import mllp_node
from worker.intake import Intake
from worker.pipeline import Pipeline
from worker.publishing import publish_rows
from worker.settings import Settings


def hl7_rows(sessions: sessionmaker[Session]) -> dict[int, ResultObject]:
    with sessions() as session:
        found = session.scalars(select(ResultObject).where(ResultObject.kind == ResultKind.HL7))
        return {o.entry_id: o for o in found}


def test_a_dicom_dropped_in_the_inbox_reaches_the_ris_acknowledged(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    port = free_port()
    settings = settings.model_copy(update={"ris_host": "127.0.0.1", "ris_port": port})
    inbox = settings.inbox
    inbox.mkdir(parents=True)
    [jpeg] = dataset_jpegs(1)
    cr_dicom(jpeg, inbox / "scored.dcm", AccessionNumber="ACC-E2E-1", PatientID="E2E-PATIENT")
    blank = chest_dicom(inbox / "blank.dcm", 7, AccessionNumber="ACC-E2E-2")  # flat: not analysed
    cr_dicom(jpeg, inbox / "no-accession.dcm", AccessionNumber="", SOPInstanceUID="1.2.3.999")
    assert blank.is_file()
    sent: list[int] = []
    intake = Intake(settings, sessions, lambda ids, origin: sent.extend(ids))
    for path in sorted(inbox.iterdir()):
        intake.admit(path, Origin.LIVE)
    scorer = FakeScorer()
    pipeline = Pipeline(settings, sessions, lambda: scorer)
    for index, entry_id in enumerate(sent):
        pipeline.triage(entry_id, token=f"task-{index}")
    with sessions() as session:
        by_name = {r.source_name: r for r in session.scalars(select(WorklistEntry))}
    assert by_name["scored.dcm"].status is Status.DONE
    assert by_name["blank.dcm"].status is Status.REJECTED
    assert publish_rows(settings, sessions, scorer, sent).pending == []
    tracked = hl7_rows(sessions)
    assert set(tracked) == {by_name["scored.dcm"].id, by_name["blank.dcm"].id}  # no accession: none
    node = mllp_node(settings)
    assert node is not None
    policy = DeliveryPolicy(poll_s=0.05, drain_in_order=True)
    loop = Deliverer(sessions, node, policy, kinds=(ResultKind.HL7,))
    stop = threading.Event()
    with listener(port, tmp_path / "ris.jsonl") as ris:
        threading.Thread(target=loop.run, args=(stop,), daemon=True).start()
        try:
            wait_until(
                lambda: all(o.state is ResultState.STORED for o in hl7_rows(sessions).values()),
                60,
                "both messages acknowledged",
                [ris.log],
            )
        finally:
            stop.set()
        got = {m["accession"]: m for m in ris.messages()}
    scored = got["ACC-E2E-1"]
    row = by_name["scored.dcm"]
    assert scored["patient_id"] == "E2E-PATIENT" and scored["answer"] == "AA"
    assert scored["tier"] == "103391001"  # the fake scorer's urgent
    assert float(scored["probability"]) == pytest.approx(row.probability, abs=1e-4)
    assert scored["model_version"] == row.model_version == scorer.version
    assert scored["control_id"] == tracked[row.id].sop_instance_uid
    not_analysed = got["ACC-E2E-2"]
    assert not_analysed["analysis"] == "111245" and not_analysed["probability"] == ""
    assert any("Not analysed: the image is blank" in c for c in not_analysed["comments"])
    # the PACS's objects are untouched by the RIS loop: still pending for the PACS deliverer
    with sessions() as session:
        dicom = session.scalars(select(ResultObject).where(ResultObject.kind != ResultKind.HL7))
        assert {o.state for o in dicom} == {ResultState.PENDING}


@pytest.mark.slow
@pytest.mark.tf
def test_cxr_triage_run_with_the_real_model_sends_the_oru(tmp_path: Path, model_dir: Path) -> None:
    port = free_port()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    env.update(
        CXR_MODEL_PATH=str(model_dir),
        CXR_DATA_DIR=str(tmp_path / "data"),
        CXR_RIS_HOST="127.0.0.1",
        CXR_RIS_PORT=str(port),
        CXR_RIS_RECEIVING_APPLICATION="RIS^1.2.3.4^ISO",
        CXR_METRICS_PORT=str(free_port()),
        PYTHONUNBUFFERED="1",
    )
    database_url = f"sqlite:///{tmp_path / 'data' / 'worklist.sqlite3'}"
    [jpeg] = dataset_jpegs(1)
    source = cr_dicom(jpeg, tmp_path / "cr.dcm", AccessionNumber="ACC-REAL-7")
    log = tmp_path / "run.log"
    with listener(port, tmp_path / "ris.jsonl") as ris, running(["run", str(inbox)], env, log):
        shutil.copyfile(source, inbox / "cr.dcm.part")
        (inbox / "cr.dcm.part").rename(inbox / "cr.dcm")
        wait_until(lambda: ris.messages(), 300, "the ORU^R01 at the RIS", [log, ris.log])
        [message] = ris.messages()
    [row] = rows(database_url)
    assert row.status is Status.DONE
    assert message["accession"] == "ACC-REAL-7" and message["answer"] == "AA"
    tiers = {"urgent": "103391001", "suspect": "SUSPECT", "routine": "50811001"}
    assert message["tier"] == tiers[row.priority or ""]
    assert float(message["probability"]) == pytest.approx(row.probability, abs=1e-4)
    assert message["model_version"] == row.model_version
    assert message["receiving_application"] == "RIS^1.2.3.4^ISO"
