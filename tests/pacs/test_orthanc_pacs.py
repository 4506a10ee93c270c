"""What a PACS administrator checks, against a real Orthanc (Debian's package, hardened: the
called AE title checked, stores only from registered modalities), started on free ports:

- ``cxr-triage pacs-echo`` answers 0 with the SR and SC accepted, 1 with the reason;
- a wrong called AE title fails the results at once, in words; an unregistered calling AE
  title (Orthanc aborts the association) stays pending with words that say what to check;
- an Orthanc that refuses JPEG gets the SC uncompressed, in the source study;
- every film that was the device's to read but not scored gets a "not analysed" SR in its
  own study in Orthanc, valid under dciodvfy; the others get nothing.
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ComprehensiveSRStorage, JPEGBaseline8Bit, SecondaryCaptureImageStorage
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import ResultObject, ResultState, Status, WorklistEntry
from db.worklist import get_entry
from pacs.delivery import ASSOCIATION_REJECTED, Deliverer, DeliveryPolicy
from pacs.store import PacsNode
from tests.fakes import FakeScorer
from tests.orthanc import ORTHANC, Orthanc
from tests.pacs.delivery_rows import add_rows
from tests.pacs.test_delivery import Clock
from tests.processes import CLI, service_env
from tests.support.settings import folder_settings
from tests.support.worklist import record_unscored
from tests.worker.test_not_analysed import FILES, unscored  # noqa: F401  (the fixture)
from worker.publishing import publish_rows
from worker.settings import Settings

pytestmark = pytest.mark.skipif(ORTHANC is None, reason="needs orthanc")
STORESCU = shutil.which("storescu", path="/usr/bin:/usr/local/bin")


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return folder_settings(tmp_path, database_url, batch_size=4)


def orthanc_for(tmp_path: Path, **config: object) -> Orthanc:
    return Orthanc(
        tmp_path / "orthanc",
        hardened=True,
        modalities={"cxr": ("CXR_TRIAGE", "127.0.0.1", 104)},
        extra_config=dict(config),
    )


def node_of(orthanc: Orthanc, **overrides: object) -> PacsNode:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": orthanc.dicom_port,
        "called_ae_title": "ORTHANC",
        "timeout_s": 30.0,  # the shared 2-core machine can be slow to answer
    }
    values.update(overrides)
    return PacsNode(**values)  # type: ignore[arg-type]


def objects(sessions: sessionmaker[Session]) -> list[ResultObject]:
    with sessions() as session:
        return list(session.scalars(select(ResultObject).order_by(ResultObject.id)))


def test_pacs_echo_against_orthanc(tmp_path: Path) -> None:
    orthanc = orthanc_for(tmp_path)
    env = service_env(
        tmp_path,
        f"sqlite:///{tmp_path / 'unused.sqlite3'}",
        None,
        CXR_PACS_HOST="127.0.0.1",
        CXR_PACS_AE_TITLE="ORTHANC",
        CXR_PACS_TIMEOUT_S="10",
    )
    orthanc.start()
    try:
        env["CXR_PACS_PORT"] = str(orthanc.dicom_port)
        ok = subprocess.run([*CLI, "pacs-echo"], env=env, capture_output=True, text=True)
        env["CXR_PACS_AE_TITLE"] = "PACS"  # the default: the first thing an admin forgets
        wrong = subprocess.run([*CLI, "pacs-echo"], env=env, capture_output=True, text=True)
    finally:
        orthanc.stop()
    assert ok.returncode == 0, ok.stderr
    assert "success (0x0000)" in ok.stdout
    assert "Comprehensive SR Storage: accepted" in ok.stdout
    assert "Secondary Capture Image Storage: accepted" in ok.stdout
    assert wrong.returncode == 1
    assert "called AE title not recognised (check CXR_PACS_AE_TITLE)" in wrong.stderr


def test_orthanc_that_does_not_know_the_called_ae_title_fails_the_results_at_once(
    sessions, tmp_path: Path, reference_grey, overlay
) -> None:
    add_rows(sessions, tmp_path, reference_grey, overlay, 2)
    orthanc = orthanc_for(tmp_path)
    orthanc.start()
    try:
        loop = Deliverer(sessions, node_of(orthanc, called_ae_title="PACS"), clock=Clock())
        report = loop.deliver_once()
        unknown_caller = node_of(orthanc, calling_ae_title="STRANGER")
        with sessions.begin() as session:  # the operator fixes the called title, re-sends
            from db.results import requeue

            assert requeue(session, Clock().now) == 4
        second = Deliverer(sessions, unknown_caller, clock=Clock()).deliver_once()
    finally:
        orthanc.stop()
    assert report.failed == 4
    found = objects(sessions)
    assert report.error and "called AE title not recognised" in report.error
    assert second.retrying == 4  # Orthanc aborts for an unregistered caller: retried, in words
    assert all(o.state is ResultState.PENDING for o in found)
    assert any("may not let AE title STRANGER store" in (o.last_error or "") for o in found)
    assert ASSOCIATION_REJECTED == "association_rejected"


def test_orthanc_that_refuses_jpeg_gets_the_sc_uncompressed(
    sessions, tmp_path: Path, reference_grey, overlay
) -> None:
    [entry_id] = add_rows(sessions, tmp_path, reference_grey, overlay, 1)
    orthanc = orthanc_for(tmp_path, JpegTransferSyntaxAccepted=False)
    orthanc.start()
    try:
        report = Deliverer(sessions, node_of(orthanc), clock=Clock()).deliver_once()
        sc = next(o for o in objects(sessions) if (o.path or "").split("/")[-1].startswith("SC_"))
        instance = orthanc.orthanc_id(sc.sop_instance_uid or "")
        stored = pydicom.dcmread(
            __import__("io").BytesIO(orthanc.get_bytes(f"/instances/{instance}/file"))
        )
    finally:
        orthanc.stop()
    assert report.stored == 2, [o.last_error for o in objects(sessions)]
    assert stored.SOPClassUID == SecondaryCaptureImageStorage
    assert stored.file_meta.TransferSyntaxUID != JPEGBaseline8Bit
    assert stored.file_meta.TransferSyntaxUID.is_compressed is False
    assert stored.SOPInstanceUID == sc.sop_instance_uid
    written = pydicom.dcmread(sc.path or "")
    assert stored.StudyInstanceUID == written.StudyInstanceUID
    assert (stored.Rows, stored.Columns) == (written.Rows, written.Columns)
    assert entry_id


@pytest.mark.skipif(
    shutil.which("dciodvfy") is None or STORESCU is None, reason="needs dicom3tools and dcmtk"
)
def test_each_unscored_film_of_the_device_has_a_valid_not_analysed_sr_in_its_orthanc_study(
    settings: Settings,
    sessions: sessionmaker[Session],
    unscored: dict[str, int],  # noqa: F811
    tmp_path: Path,
) -> None:
    # a film the content check refused (the model's reason), on a header of the device's
    refused = unscored["no-view.dcm"]
    with sessions.begin() as session:
        entry = get_entry(session, refused)
        assert entry is not None
        record_unscored(
            session, entry, Status.REJECTED, "not_chest_radiograph", "d", entry.archived_path or ""
        )
    with sessions() as session:
        rows = {r.id: r for r in session.scalars(select(WorklistEntry))}
    orthanc = Orthanc(tmp_path / "orthanc", hardened=False)
    orthanc.start()
    try:
        for row in rows.values():  # the originals are in the PACS first, as they would be
            original = Path(row.archived_path or "")
            if row.reason not in ("truncated",):  # Orthanc refuses to store a truncated file
                subprocess.run(
                    [str(STORESCU), "-aec", "ORTHANC", "127.0.0.1", str(orthanc.dicom_port),
                     str(original)],
                    capture_output=True,
                    timeout=60,
                    check=True,
                )  # fmt: skip
        assert publish_rows(settings, sessions, FakeScorer(), list(rows)).pending == []
        report = Deliverer(
            sessions, node_of(orthanc), DeliveryPolicy(), clock=lambda: datetime.now().astimezone()
        ).deliver_once()
        devices = {unscored[n] for n, (_, theirs) in FILES.items() if theirs}
        assert report.stored == len(devices)
        for row_id, row in rows.items():
            study = pydicom.dcmread(row.archived_path or "", stop_before_pixels=True)
            instances = orthanc.instances_in_study(study.StudyInstanceUID)
            reports = [i for i in instances if i["SOPClassUID"] == ComprehensiveSRStorage]
            if row_id not in devices:
                assert reports == [], row.source_name
                continue
            [sr] = reports
            [obj] = [o for o in objects(sessions) if o.entry_id == row_id]
            assert sr["SOPInstanceUID"] == obj.sop_instance_uid
            path = tmp_path / f"from-orthanc-{row_id}.dcm"
            path.write_bytes(
                orthanc.get_bytes(f"/instances/{orthanc.orthanc_id(sr['SOPInstanceUID'])}/file")
            )
            checked = subprocess.run(
                ["dciodvfy", "-new", str(path)], capture_output=True, text=True
            )
            output = checked.stdout + checked.stderr
            errors = [line for line in output.splitlines() if line.startswith("Error")]
            assert "ComprehensiveSR" in output and not errors, "\n".join(errors)
            text = pydicom.dcmread(path)
            assert text.PatientID == study.PatientID
    finally:
        orthanc.stop()
