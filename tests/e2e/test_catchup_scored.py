"""End to end with the real model: a real Orthanc holds chest studies that cxr-triage's
receiver never got (no routing: the forward failed while it was down). ``cxr-triage run``
with the catch-up on and ``cxr-triage listen``, nothing else:

- the frontal chest films are fetched (C-FIND, C-MOVE to the receiver), scored, and their
  SR and SC land in their own studies in Orthanc;
- the films that are the device's to read but cannot be scored (a blank film; a picture that
  is no chest radiograph under a CR chest header, refused by the content check) get a "not
  analysed" SR in their studies, valid under dciodvfy; the lateral gets nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pydicom
import pytest
from sqlalchemy.exc import OperationalError

from db.models import ResultState, Status
from tests.corpus import cr_dicom, dataset_jpegs, lateral_dicom
from tests.e2e.test_orthanc import SC_CLASS, SR_CLASS, objects
from tests.ingest.dicom_factory import base_dataset, set_pixels, write
from tests.nonchest import nonchest_images, to_uint8
from tests.orthanc import ORTHANC, Orthanc
from tests.pacs import sr_tree
from tests.pacs.scp import free_port
from tests.processes import rows, running
from tests.support import wait_until

STORESCU = shutil.which("storescu", path="/usr/bin:/usr/local/bin")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.tf,
    pytest.mark.skipif(
        ORTHANC is None or STORESCU is None or shutil.which("dciodvfy") is None,
        reason="needs orthanc, dcmtk and dicom3tools",
    ),
]


def dated(path: Path, when: datetime) -> Path:
    ds = pydicom.dcmread(path)
    ds.StudyDate = f"{when:%Y%m%d}"
    ds.StudyTime = f"{when:%H%M%S}"
    ds.save_as(path, enforce_file_format=True)
    return path


def rows_now(database_url: str) -> list:  # type: ignore[type-arg]
    """The worklist rows, or none while ``run`` has not created the database yet."""
    try:
        return rows(database_url)
    except OperationalError:
        return []


def pa_of(grey: np.ndarray, path: Path) -> Path:
    """A CR chest PA header around ``grey`` (0..255)."""
    return write(set_pixels(base_dataset(*grey.shape), grey.astype(np.uint8)), path)


def test_studies_the_receiver_never_got_are_fetched_scored_and_answered_in_orthanc(
    tmp_path: Path, model_dir: Path
) -> None:
    listen_port = free_port()
    orthanc = Orthanc(
        tmp_path / "orthanc",
        hardened=True,
        modalities={
            "cxr": ("CXR_TRIAGE", "127.0.0.1", listen_port),
            "modality": ("MODALITY", "127.0.0.1", 104),
        },
    )
    now = datetime.now() - timedelta(minutes=20)
    staging = tmp_path / "staging"
    staging.mkdir()
    jpegs = dataset_jpegs(3)
    name, picture = next(iter(nonchest_images()))
    files = {
        "normal": dated(cr_dicom(jpegs[0], staging / "a.dcm"), now),
        "pneumonia": dated(cr_dicom(jpegs[1], staging / "b.dcm"), now),
        "blank": dated(pa_of(np.full((256, 256), 128), staging / "c.dcm"), now),
        "not-chest": dated(pa_of(to_uint8(picture), staging / "d.dcm"), now),
        "lateral": dated(lateral_dicom(jpegs[2], staging / "e.dcm"), now),
    }
    study = {k: str(pydicom.dcmread(p).StudyInstanceUID) for k, p in files.items()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    env.update(
        CXR_MODEL_PATH=str(model_dir),
        CXR_DATA_DIR=str(tmp_path / "data"),
        CXR_INBOX=str(tmp_path / "inbox"),
        CXR_QUIET_PERIOD_S="0.5",
        CXR_LISTEN_PORT=str(listen_port),
        CXR_LISTEN_HOST="127.0.0.1",
        CXR_PACS_HOST="127.0.0.1",
        CXR_PACS_AE_TITLE="ORTHANC",
        CXR_PACS_TIMEOUT_S="30",
        CXR_CATCHUP_HOURS="2",
        CXR_CATCHUP_INTERVAL_S="10",
        PYTHONUNBUFFERED="1",
    )
    database_url = f"sqlite:///{tmp_path / 'data' / 'worklist.sqlite3'}"
    logs = [tmp_path / "listen.log", tmp_path / "run.log", orthanc.log]
    orthanc.start()
    try:
        env["CXR_PACS_PORT"] = str(orthanc.dicom_port)
        for path in files.values():  # in the PACS; never forwarded to cxr-triage
            subprocess.run(
                [str(STORESCU), "-aet", "MODALITY", "-aec", "ORTHANC", "127.0.0.1",
                 str(orthanc.dicom_port), str(path)],
                check=True,
                capture_output=True,
                timeout=60,
            )  # fmt: skip
        with running(["listen"], env, logs[0]), running(["run"], env, logs[1]):
            wait_until(lambda: len(rows_now(database_url)) >= 4, 300, "four rows", logs)
            wait_until(
                lambda: (
                    all(r.status in (Status.DONE, Status.REJECTED) for r in rows_now(database_url))
                    and sum(o.state is ResultState.STORED for o in objects(database_url)) >= 6
                ),
                400,
                "two scored and two not analysed, their results stored",
                logs,
            )
        by_study = {r.study_instance_uid: r for r in rows(database_url)}
        assert set(by_study) == {study[k] for k in ("normal", "pneumonia", "blank", "not-chest")}
        assert by_study[study["blank"]].reason == "blank_image"
        assert by_study[study["not-chest"]].reason == "not_chest_radiograph", name
        for key in ("normal", "pneumonia"):
            assert by_study[study[key]].status is Status.DONE
            classes = [i["SOPClassUID"] for i in orthanc.instances_in_study(study[key])]
            assert classes.count(SR_CLASS) == 1 and classes.count(SC_CLASS) == 1
        for key in ("blank", "not-chest"):
            found = orthanc.instances_in_study(study[key])
            [report] = [i for i in found if i["SOPClassUID"] == SR_CLASS]
            assert not [i for i in found if i["SOPClassUID"] == SC_CLASS]
            path = tmp_path / f"{key}-sr.dcm"
            instance = orthanc.orthanc_id(report["SOPInstanceUID"])
            path.write_bytes(orthanc.get_bytes(f"/instances/{instance}/file"))
            checked = subprocess.run(
                ["dciodvfy", "-new", str(path)], capture_output=True, text=True
            )
            errors = [
                line
                for line in (checked.stdout + checked.stderr).splitlines()
                if line.startswith("Error")
            ]
            assert not errors, "\n".join(errors)
            sr = pydicom.dcmread(path)
            summary = sr_tree.only(sr, "DCM", "111017")
            assert sr_tree.coded_value(summary) == ("DCM", "111245")
            [comment] = sr_tree.find(sr, "DCM", "121106")
            assert f"reason code {by_study[study[key]].reason}" in comment.TextValue
        lateral = [i["SOPClassUID"] for i in orthanc.instances_in_study(study["lateral"])]
        assert lateral == ["1.2.840.10008.5.1.4.1.1.1"]  # only itself: no result of any kind
        run_log = (tmp_path / "data" / "logs" / "run.log").read_text()
        assert (
            "catch-up: 5 CR/DX studies in the last 2 h, 0 on the worklist, 4 moved (4 images), "
            "0 refused whole by the receiver, 1 problem(s)"  # Orthanc: 0xC000 for the lateral
        ) in run_log
    finally:
        orthanc.stop()
