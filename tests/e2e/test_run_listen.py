"""``cxr-triage run ./inbox --listen``: one process is the DICOM node (issues 19 and 21). A
modality's C-STORE (dcmtk's storescu) lands in the inbox ``run`` watches, is handed to the
watcher without the share's quiet period, is scored, and its SR and SC are stored in a real
Orthanc, in the radiograph's study. The seconds from Success to the row and to the SR are
printed (the bench measures them on a quiet machine: ``bench/bench_receiver.py latency``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pydicom
import pytest

from db.models import ResultState, Status
from tests.corpus import cr_dicom, dataset_jpegs
from tests.e2e.test_orthanc import objects
from tests.orthanc import ORTHANC, Orthanc
from tests.pacs.hostile import echo
from tests.processes import rows, running
from tests.support import free_port, wait_until

STORESCU = shutil.which("storescu", path="/usr/bin:/usr/local/bin")
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.tf,
    pytest.mark.skipif(ORTHANC is None or STORESCU is None, reason="needs orthanc and dcmtk"),
]


def test_a_c_store_into_run_listen_is_scored_and_its_results_land_in_orthanc(
    tmp_path: Path, model_dir: Path
):
    listen_port = free_port()
    orthanc = Orthanc(
        tmp_path / "orthanc",
        hardened=True,
        modalities={"cxr": ("CXR_TRIAGE", "127.0.0.1", listen_port)},
    )
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    env.update(
        CXR_MODEL_PATH=str(model_dir),
        CXR_DATA_DIR=str(tmp_path / "data"),
        CXR_LISTEN_HOST="127.0.0.1",
        CXR_PACS_HOST="127.0.0.1",
        CXR_PACS_PORT=str(orthanc.dicom_port),
        CXR_PACS_AE_TITLE="ORTHANC",
        CXR_PACS_TIMEOUT_S="5",
        CXR_RESULTS_RETRY_MAX_S="2",
        PYTHONUNBUFFERED="1",
    )
    database_url = f"sqlite:///{tmp_path / 'data' / 'worklist.sqlite3'}"
    [jpeg] = dataset_jpegs(1)
    source = cr_dicom(jpeg, tmp_path / "cr.dcm")
    ds = pydicom.dcmread(source, stop_before_pixels=True)
    log = tmp_path / "run.log"
    orthanc.start()
    try:
        argv = ["run", str(inbox), "--listen", "--listen-port", str(listen_port), "--verbose"]
        with running(argv, env, log):
            wait_until(lambda: echo(listen_port, called="CXR_TRIAGE")[0], 300, "the node", [log])
            stored = subprocess.run(
                [
                    str(STORESCU),
                    "-aet",
                    "CR_ROOM1",
                    "-aec",
                    "CXR_TRIAGE",
                    "127.0.0.1",
                    str(listen_port),
                    str(source),
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            acknowledged = time.monotonic()
            assert stored.returncode == 0, stored.stdout + stored.stderr
            wait_until(
                lambda: any(r.status is Status.DONE for r in rows(database_url)),
                300,
                "the row scored",
                [log],
            )
            scored = time.monotonic()
            wait_until(
                lambda: sum(o.state is ResultState.STORED for o in objects(database_url)) == 2,
                120,
                "the SR and SC stored",
                [log, orthanc.log],
            )
            delivered = time.monotonic()
        [row] = rows(database_url)
        assert row.sop_instance_uid == ds.SOPInstanceUID
        assert row.archived_path and Path(row.archived_path).is_file()
        classes = [i["SOPClassUID"] for i in orthanc.instances_in_study(ds.StudyInstanceUID)]
        assert sorted(classes) == sorted([SR_CLASS, SC_CLASS])
        print(
            f"\nC-STORE Success -> row done {scored - acknowledged:.2f} s, "
            f"-> SR/SC in Orthanc {delivered - acknowledged:.2f} s (polled every 0.1 s)"
        )
        text = log.read_text()
        assert "DICOM node CXR_TRIAGE" in text
        assert "the watcher will" not in text  # the hand-over to the watcher never failed
        # `listen` started on its own, with the same data folder and no CXR_INBOX, receives
        # into the inbox `run ./inbox` watched (issue 21: they used to differ)
        other = free_port()
        listen_env = {**env, "CXR_LISTEN_PORT": str(other)}
        with running(["listen"], listen_env, tmp_path / "listen.log"):
            wait_until(lambda: echo(other, called="CXR_TRIAGE")[0], 60, "listen", [log])
        assert f"into {inbox} " in (tmp_path / "listen.log").read_text()
    finally:
        orthanc.stop()
