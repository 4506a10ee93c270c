"""Scenario 7: no PHI in any log, even at DEBUG.

A DICOM with a distinctive patient name, ID, birth date, accession number and UIDs (and a
file name carrying the patient's name, as some senders do) goes through the watcher and a
worker at DEBUG; then a copy of it (a duplicate) and a broken variant follow. Nothing of the
header's identifiers, nor the file name, may appear in any output: logs name rows by id and
content hash. The file name is kept in the database (``source_name``) and in quarantine
sidecars, which are access-controlled like the worklist, never in logs. A RIS is
configured (issue 25): the scored exams' ORU^R01 messages are written on the same path.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from db.models import FINAL_STATUSES
from tests.corpus import cr_dicom, dataset_jpegs, truncated_copy
from tests.processes import files_under
from tests.reliability.stack import Stack
from tests.support import free_port, wait_until
from tests.support.servers import PrivateRedis

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.tf, pytest.mark.timeout(300)]

PHI = {
    "PatientName": "Zyxwvutsonian^Quixotella^Marguerite",
    "PatientID": "PHI-ID-77341928",
    "PatientBirthDate": "20190417",
    "AccessionNumber": "ACC98127364",
    "OtherPatientIDs": "OTHER-55128833",
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.77341928112233445566",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.77341928112233445577",
    "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.77341928112233445588",
}


def test_no_patient_identifier_reaches_any_log_at_debug(
    tmp_path: Path, pg_url: str, private_redis: PrivateRedis, model_dir: Path
) -> None:
    # Issue 25: a RIS configured, so the worker writes each scored exam's ORU^R01 too.
    ris = {"CXR_RIS_HOST": "127.0.0.1", "CXR_RIS_PORT": str(free_port())}
    stack = Stack(tmp_path, pg_url, private_redis.url, model_dir, CXR_LOG_LEVEL="DEBUG", **ris)
    stack.upgrade()
    jpegs = dataset_jpegs(3)
    name = "Zyxwvutsonian_Quixotella_PHI-ID-77341928.dcm"
    source = cr_dicom(jpegs[0], stack.staging / name, **PHI)
    stack.staging.joinpath("copy").mkdir()
    copy = stack.staging / "copy" / name
    copy.write_bytes(source.read_bytes())
    broken = dict(PHI, SOPInstanceUID=PHI["SOPInstanceUID"] + "9")
    truncated_copy(
        cr_dicom(jpegs[1], stack.staging / "whole.dcm", **broken),
        stack.staging / f"broken_{name}",
        0.5,
    )
    # Issue 12: a name without '^' (highdicom warned, quoting it) and a malformed birth date
    # (the SR constructor raised, quoting it).
    odd = dict(
        PHI,
        PatientName="Zyxwvutsonian Quixotella",
        PatientBirthDate="2019-04-17",
        SOPInstanceUID=PHI["SOPInstanceUID"] + "7",
    )
    cr_dicom(jpegs[2], stack.staging / f"odd_{name}", **odd)
    with stack.worker("worker", 2), stack.watcher():
        stack.drop(source)
        stack.drop(stack.staging / f"broken_{name}")
        stack.drop(stack.staging / f"odd_{name}")
        wait_until(
            lambda: (
                len(stack.rows()) == 3 and all(r.status in FINAL_STATUSES for r in stack.rows())
            ),
            180,
            "all three rows final",
            stack.logs,
        )
        # The deferred results (heatmap, SR, SC) of both scored DICOMs, or their failure.
        outbox = stack.root / "data" / "outbox"
        wait_until(
            lambda: (
                len(list(outbox.glob("*.dcm"))) >= 4
                or "could not be written" in "".join(p.read_text() for p in stack.logs)
            ),
            120,
            "the results of both scored DICOMs",
            stack.logs,
        )
        stack.drop(copy, f"again_{name}")  # a duplicate: quarantined by the watcher
        wait_until(lambda: not files_under(stack.inbox), 60, "the duplicate filed", stack.logs)
    rows = stack.rows()
    assert {r.patient_id for r in rows} == {PHI["PatientID"]}, "the PHI did reach the database"
    text = "\n".join(p.read_text(errors="replace") for p in stack.logs)
    assert "DEBUG" in text, "the processes really logged at DEBUG"
    assert any(f"row {r.id}" in text for r in rows), "logs identify rows by id"
    needles = [*PHI.values(), "Zyxwvutsonian", "Quixotella", "2019-04-17", name]
    leaked = [needle for needle in needles if needle in text]
    assert leaked == [], f"PHI in the logs: {leaked}"
    # SR + SC for each scored film (the odd birth date too), and since issue-delivery a "not
    # analysed" SR for the truncated one (its header is a frontal chest CR's)
    assert len(list(outbox.glob("*.dcm"))) == 5
    hl7 = outbox / "ris"
    wait_until(lambda: len(list(hl7.glob("HL7_*.hl7"))) == 3, 30, "an ORU^R01 for each of them")
