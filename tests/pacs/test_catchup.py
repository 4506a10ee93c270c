"""The catch-up against a real Orthanc holding studies cxr-triage's receiver never got (no
routing rule, as when a forward failed): C-FIND finds the CR/DX studies of the window, the
ones the worklist lacks are C-MOVEd to a real ``cxr-triage listen``, nothing else moves, and
nothing moves twice. (That they are then scored: tests/e2e/test_catchup_scored.py.)"""

from __future__ import annotations

import shutil
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pydicom
import pytest

from db.worklist import Arrival, admit
from pacs.catchup import CatchUp
from pacs.store import PacsNode
from tests.corpus import cr_dicom, ct_dicom, dataset_jpegs
from tests.orthanc import ORTHANC, Orthanc
from tests.pacs.scp import free_port, rejecting_peer
from tests.processes import running, service_env
from tests.support import wait_until

STORESCU = shutil.which("storescu", path="/usr/bin:/usr/local/bin")
pytestmark = pytest.mark.skipif(ORTHANC is None or STORESCU is None, reason="needs orthanc, dcmtk")


def dated(path: Path, when: datetime) -> Path:
    ds = pydicom.dcmread(path)
    ds.StudyDate = ds.SeriesDate = f"{when:%Y%m%d}"
    ds.StudyTime = ds.SeriesTime = f"{when:%H%M%S}"
    ds.save_as(path, enforce_file_format=True)
    return path


def storescu(path: Path, port: int) -> None:
    result = subprocess.run(
        [str(STORESCU), "-aet", "MODALITY", "-aec", "ORTHANC", "127.0.0.1", str(port), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def received(inbox: Path) -> set[str]:
    return {
        str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID)
        for p in inbox.rglob("*.dcm")
        if not p.name.startswith(".")
    }


def test_the_catch_up_moves_exactly_the_missing_cr_dx_studies_of_the_window(
    sessions, tmp_path: Path
) -> None:
    listen_port = free_port()
    orthanc = Orthanc(
        tmp_path / "orthanc",
        hardened=True,
        modalities={
            "cxr-triage": ("CXR_TRIAGE", "127.0.0.1", listen_port),
            "modality": ("MODALITY", "127.0.0.1", 104),
        },
    )
    now = datetime.now()
    jpegs = dataset_jpegs(4)
    staging = tmp_path / "staging"
    staging.mkdir()
    missed_cr = dated(cr_dicom(jpegs[0], staging / "cr.dcm"), now - timedelta(minutes=30))
    missed_dx = dated(
        cr_dicom(
            jpegs[1],
            staging / "dx.dcm",
            SOPClassUID="1.2.840.10008.5.1.4.1.1.1.1",
            Modality="DX",
        ),
        now - timedelta(minutes=90),
    )
    ct = dated(ct_dicom(staging / "ct.dcm"), now - timedelta(minutes=10))
    old = dated(cr_dicom(jpegs[2], staging / "old.dcm"), now - timedelta(days=3))
    known = dated(cr_dicom(jpegs[3], staging / "known.dcm"), now - timedelta(minutes=5))
    study = {p.stem: str(pydicom.dcmread(p).StudyInstanceUID) for p in staging.iterdir()}
    with sessions.begin() as session:  # the worklist has this study already
        admit(session, Arrival("k" * 64, "known.dcm", "/x", "dicom", "1.2.3", study["known"]))
    inbox = tmp_path / "inbox"
    env = service_env(
        tmp_path,
        f"sqlite:///{tmp_path / 'listen.sqlite3'}",
        None,
        CXR_LISTEN_PORT=str(listen_port),
        CXR_LISTEN_HOST="127.0.0.1",
    )
    orthanc.start()
    try:
        for path in (missed_cr, missed_dx, ct, old, known):
            storescu(path, orthanc.dicom_port)
        node = PacsNode("127.0.0.1", orthanc.dicom_port, "ORTHANC", "CXR_TRIAGE", 30.0)
        catchup = CatchUp(sessions, node, "CXR_TRIAGE", timedelta(hours=2))
        with running(["listen"], env, tmp_path / "listen.log"):
            wait_until(lambda: "listening" in (tmp_path / "listen.log").read_text(), 60)
            first = catchup.run_once()
            wait_until(lambda: len(received(inbox)) >= 2, 30, "the moved studies")
            second = catchup.run_once()
        nowhere = CatchUp(sessions, node, "NOBODY", timedelta(hours=2)).run_once()
    finally:
        orthanc.stop()
    assert (first.found, first.known, first.moved, first.images) == (3, 1, 2, 2), first
    assert first.failed == []
    assert received(inbox) == {study["cr"], study["dx"]}  # no CT, no old study, no known one
    assert (second.found, second.moved) == (3, 0)  # asked once per window
    assert nowhere.moved == 0
    assert nowhere.failed and all(
        "does not know NOBODY as a move destination" in f for f in nowhere.failed
    ), nowhere


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"StudyInstanceUID": "1.2.3", "StudyDate": "20261206", "StudyTime": "101500"}, True),
        ({"StudyInstanceUID": "1.2.3", "StudyDate": "20261206"}, True),  # no time: its date
        ({"StudyInstanceUID": "1.2.3"}, True),  # no date: kept (the query asked for the range)
        ({"StudyInstanceUID": ""}, False),
        ({"StudyInstanceUID": "1." + "2" * 70}, False),  # no worklist key can hold it
        ({"StudyInstanceUID": "1.2.3", "StudyDate": "2026-99-99", "StudyTime": "xx"}, True),
        ({}, False),
    ],
)
def test_a_c_find_answer_of_any_shape_is_read_without_an_error(values, expected):
    """What a PACS (or something posing as one) answers is data: read, never trusted."""
    from pydicom.dataset import Dataset

    from pacs.catchup import _study

    identifier = Dataset()
    for keyword, value in values.items():
        setattr(identifier, keyword, value)
    assert (_study(identifier) is not None) is expected


@pytest.mark.parametrize(
    ("rejection", "words"),
    [
        ((1, 1, 3), "calling AE title not recognised"),
        ((2, 3, 1), "rejected the association for now: temporary congestion"),
    ],
    ids=["unknown-caller", "congestion"],
)
def test_a_pacs_that_rejects_the_query_says_why_in_the_report(sessions, rejection, words) -> None:
    """The catch-up's query association is read as the deliverer's is: a rejection says the
    PACS's own reason (before: "unreachable or aborted" when the answer came fast)."""
    with rejecting_peer(*rejection) as peer:
        report = CatchUp(sessions, peer.node(), "CXR_TRIAGE", timedelta(hours=2)).run_once()
        assert peer.requests == 1
    assert report.found == 0 and report.moved == 0
    assert len(report.failed) == 1 and words in report.failed[0], report.failed
    assert "no query/retrieve association" in report.failed[0]
