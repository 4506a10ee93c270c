"""Against a real PACS: Debian's Orthanc, in its stock configuration and hardened (called
AE title checked, stores only from registered modalities), started by the test on free ports.
Images arrive by dcmtk ``storescu`` and by Orthanc's own routing at ``cxr-triage listen``;
``cxr-triage run`` scores them and its delivery thread stores each SR and SC in the source
study. Orthanc is then stopped during a run and started again, and later frozen (SIGSTOP):
every result arrives without an operator, each once, and triage finishes while the PACS is
frozen."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select

from db.engine import make_engine, make_session_factory
from db.models import ResultObject, ResultState, Status
from tests.corpus import cr_dicom, dataset_jpegs
from tests.ingest.dicom_factory import base_dataset, jpeg_grey, set_pixels, write
from tests.orthanc import ORTHANC, Orthanc
from tests.pacs.scp import free_port
from tests.processes import rows, running
from tests.support import wait_until

STORESCU = shutil.which("storescu", path="/usr/bin:/usr/local/bin")
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.tf,
    pytest.mark.skipif(ORTHANC is None or STORESCU is None, reason="needs orthanc and dcmtk"),
]


def storescu(path: Path, port: int, called: str, calling: str = "MODALITY") -> None:
    result = subprocess.run(
        [str(STORESCU), "-aet", calling, "-aec", called, "127.0.0.1", str(port), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def objects(database_url: str) -> list[ResultObject]:
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            return list(session.scalars(select(ResultObject)))
    finally:
        engine.dispose()


def stored_count(database_url: str, expected: int):  # type: ignore[no-untyped-def]
    def check() -> bool:
        return sum(o.state is ResultState.STORED for o in objects(database_url)) >= expected

    return check


def done_count(database_url: str, expected: int):  # type: ignore[no-untyped-def]
    def check() -> bool:
        return sum(r.status is Status.DONE for r in rows(database_url)) >= expected

    return check


def no_file_meta(jpeg: Path, path: Path) -> Path:
    """A raw dataset as some old systems export it: no preamble, no (0002,xxxx) group."""
    ds = set_pixels(base_dataset(*jpeg_grey(jpeg).shape), jpeg_grey(jpeg))
    ds.PatientID = "RAW-0001"
    return write(ds, path, preamble=False)


@pytest.mark.parametrize("hardened", [True, False], ids=["hardened", "stock"])
def test_results_reach_orthanc_through_an_outage_and_a_freeze(
    tmp_path: Path, model_dir: Path, hardened: bool
):
    listen_port = free_port()
    orthanc = Orthanc(
        tmp_path / "orthanc",
        hardened=hardened,
        modalities={
            "cxr": ("CXR_TRIAGE", "127.0.0.1", listen_port),
            "modality": ("MODALITY", "127.0.0.1", 104),
        },
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    env.update(
        CXR_MODEL_PATH=str(model_dir),
        CXR_DATA_DIR=str(tmp_path / "data"),
        CXR_INBOX=str(tmp_path / "inbox"),
        CXR_QUIET_PERIOD_S="0.5",
        CXR_LISTEN_PORT=str(listen_port),
        CXR_LISTEN_HOST="127.0.0.1",
        CXR_PACS_HOST="127.0.0.1",
        CXR_PACS_PORT=str(orthanc.dicom_port),
        CXR_PACS_AE_TITLE="ORTHANC",
        CXR_PACS_TIMEOUT_S="5",
        CXR_RESULTS_RETRY_MAX_S="2",
        PYTHONUNBUFFERED="1",
    )
    database_url = f"sqlite:///{tmp_path / 'data' / 'worklist.sqlite3'}"
    staging = tmp_path / "staging"
    staging.mkdir()
    jpegs = dataset_jpegs(8)
    files = [cr_dicom(jpeg, staging / f"{index}.dcm") for index, jpeg in enumerate(jpegs)]
    # the two real-world headers that used to get no results
    files[2] = cr_dicom(jpegs[2], staging / "2.dcm", PatientBirthDate="2021-01-15")
    files[3] = no_file_meta(jpegs[3], staging / "3.dcm")
    studies = [pydicom.dcmread(f, force=True).StudyInstanceUID for f in files]
    logs = [tmp_path / "listen.log", tmp_path / "run.log", orthanc.log]
    orthanc.start()
    try:
        # the sources are in the PACS first, as they would be
        for path in (files[0], files[1], files[2]):
            storescu(path, orthanc.dicom_port, "ORTHANC")
        with (
            running(["listen"], env, logs[0]),
            running(["run"], env, logs[1]),
        ):
            wait_until(lambda: (tmp_path / "data" / "worklist.sqlite3").exists(), 120, "db", logs)
            wait_until(_answers(listen_port), 60, "the DICOM node", logs)
            storescu(files[0], listen_port, "CXR_TRIAGE")  # a modality pushes
            orthanc.post("/modalities/cxr/store", orthanc.orthanc_id(_uid(files[1])))  # routing
            storescu(files[2], listen_port, "CXR_TRIAGE")
            shutil.copy(files[3], tmp_path / "inbox" / "raw.dcm")  # from a share
            wait_until(done_count(database_url, 4), 300, "four rows scored", logs)
            wait_until(stored_count(database_url, 8), 120, "eight results stored", logs)
            for study in studies[:4]:
                classes = [i["SOPClassUID"] for i in orthanc.instances_in_study(study)]
                assert classes.count(SR_CLASS) == 1 and classes.count(SC_CLASS) == 1, study

            # Orthanc down during the run: results wait, then arrive by themselves
            orthanc.stop()
            for path in files[4:6]:
                storescu(path, listen_port, "CXR_TRIAGE")
            wait_until(done_count(database_url, 6), 300, "six rows scored", logs)
            wait_until(_retried(database_url, 4), 60, "failed attempts on the new results", logs)
            orthanc.start()
            wait_until(stored_count(database_url, 12), 120, "twelve results stored", logs)

            # Orthanc frozen: triage goes on, results wait for it
            orthanc.freeze()
            for path in files[6:8]:
                storescu(path, listen_port, "CXR_TRIAGE")
            wait_until(done_count(database_url, 8), 300, "eight rows scored (PACS frozen)", logs)
            # triage finished while the PACS could take nothing; the results are written
            wait_until(lambda: len(objects(database_url)) == 16, 120, "all results written", logs)
            pending = [o for o in objects(database_url) if o.state is not ResultState.STORED]
            assert len(pending) == 4
            orthanc.thaw()
            wait_until(stored_count(database_url, 16), 180, "every result stored", logs)
        for study in studies:
            classes = [i["SOPClassUID"] for i in orthanc.instances_in_study(study)]
            assert classes.count(SR_CLASS) == 1 and classes.count(SC_CLASS) == 1, study
        final = objects(database_url)
        assert all(o.state is ResultState.STORED for o in final)
        # stored once: what the PACS took while up was sent once; no object was re-sent
        first_batch = [o for o in final if o.attempts == 1]
        assert len(first_batch) >= 8
        statistics = orthanc.get("/statistics")
        assert statistics["CountInstances"] == 3 + 16
    finally:
        orthanc.stop()


def _uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _answers(port: int):  # type: ignore[no-untyped-def]
    echoscu = shutil.which("echoscu", path="/usr/bin:/usr/local/bin") or "echoscu"

    def check() -> bool:
        command = [echoscu, "-aec", "CXR_TRIAGE", "127.0.0.1", str(port)]
        return subprocess.run(command, capture_output=True).returncode == 0

    return check


def _retried(database_url: str, count: int):  # type: ignore[no-untyped-def]
    def check() -> bool:
        waiting = [
            o
            for o in objects(database_url)
            if o.state is ResultState.PENDING and o.attempts >= 1 and o.last_error
        ]
        return len(waiting) >= count

    return check
