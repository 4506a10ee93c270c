"""The README's Orthanc routing recipe (``docs/orthanc/cxr-triage-routing.lua``), tested as a
PACS administrator would install it: a real Orthanc (hardened: stores only from registered
modalities) with the script, a real ``cxr-triage listen``, images sent by dcmtk's storescu.

- frontal chest CR and DX reach cxr-triage; a lateral, a CT, a hand and a DX for
  processing do not;
- cxr-triage's SR and SC stored back into Orthanc are not routed (no loop);
- an image stored while cxr-triage's receiver is down reaches it after the receiver is back,
  on the next arrival (the script's retry; its interval shortened from 60 s to 1 s here).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from model.overlay import overlay_heatmap
from pacs.outbox import write_results
from pacs.store import PacsNode, send
from tests.corpus import cr_dicom, ct_dicom, dataset_jpegs, lateral_dicom
from tests.orthanc import ORTHANC, Orthanc
from tests.pacs.scp import free_port
from tests.processes import running, service_env
from tests.support import wait_until
from tests.support.pacs import URGENT, synthetic_heatmap

RECIPE = Path(__file__).resolve().parents[2] / "docs" / "orthanc" / "cxr-triage-routing.lua"
STORESCU = shutil.which("storescu", path="/usr/bin:/usr/local/bin")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(ORTHANC is None or STORESCU is None, reason="needs orthanc and dcmtk"),
]


def storescu(path: Path, port: int, calling: str) -> None:
    result = subprocess.run(
        [str(STORESCU), "-aet", calling, "-aec", "ORTHANC", "127.0.0.1", str(port), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def received(inbox: Path) -> set[str]:
    """SOP Instance UIDs of the objects the receiver wrote (names are the receiver's)."""
    uids = set()
    for path in inbox.rglob("*.dcm"):  # not the receiver's own lock and part files
        if path.is_file() and not any(p.startswith(".") for p in path.relative_to(inbox).parts):
            uids.add(str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID))
    return uids


def uid_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


@pytest.fixture
def overlay() -> Image.Image:
    return overlay_heatmap(np.full((64, 64), 100, dtype=np.float32), synthetic_heatmap())


def test_the_lua_recipe_routes_frontal_chest_radiographs_retries_and_never_loops(
    tmp_path: Path, overlay: Image.Image
) -> None:
    listen_port = free_port()
    script = tmp_path / "cxr-triage-routing.lua"
    text = RECIPE.read_text()
    assert "local RETRY_EVERY_S = 60" in text
    script.write_text(text.replace("local RETRY_EVERY_S = 60", "local RETRY_EVERY_S = 1"))
    orthanc = Orthanc(
        tmp_path / "orthanc",
        hardened=True,
        modalities={
            "cxr-triage": ("CXR_TRIAGE", "127.0.0.1", listen_port),
            "modality": ("MODALITY", "127.0.0.1", 104),
        },
        extra_config={"LuaScripts": [str(script)]},
    )
    inbox = tmp_path / "inbox"
    env = service_env(
        tmp_path,
        f"sqlite:///{tmp_path / 'worklist.sqlite3'}",
        None,
        CXR_LISTEN_PORT=str(listen_port),
        CXR_LISTEN_HOST="127.0.0.1",
        CXR_LISTEN_PEERS="ORTHANC@127.0.0.1",
    )
    staging = tmp_path / "staging"
    staging.mkdir()
    jpegs = dataset_jpegs(6)
    routed = [
        cr_dicom(jpegs[0], staging / "cr-pa.dcm"),
        cr_dicom(
            jpegs[1],
            staging / "dx-ap.dcm",
            SOPClassUID="1.2.840.10008.5.1.4.1.1.1.1",
            Modality="DX",
            ViewPosition="AP",
        ),
        cr_dicom(jpegs[2], staging / "no-view.dcm", ViewPosition=""),
    ]
    not_routed = [
        lateral_dicom(jpegs[3], staging / "lateral.dcm"),
        ct_dicom(staging / "ct.dcm"),
        cr_dicom(jpegs[4], staging / "hand.dcm", BodyPartExamined="HAND"),
        cr_dicom(
            jpegs[4],
            staging / "processing.dcm",
            SOPClassUID="1.2.840.10008.5.1.4.1.1.1.1.1",
            Modality="DX",
        ),
    ]
    late = cr_dicom(jpegs[5], staging / "while-down.dcm")
    logs = [tmp_path / "listen.log", tmp_path / "listen-2.log", orthanc.log]
    orthanc.start()
    try:
        with running(["listen"], env, logs[0]):
            wait_until(lambda: "listening" in logs[0].read_text(), 60, "listen to start", logs)
            for path in [*routed, *not_routed]:
                storescu(path, orthanc.dicom_port, "MODALITY")
            expected = {uid_of(p) for p in routed}
            wait_until(lambda: received(inbox) >= expected, 60, "the routed images", logs)
            time.sleep(3)  # time for anything wrongly routed to arrive too
            assert received(inbox) == expected
            # cxr-triage's results come back into the study: never routed again
            outbox = tmp_path / "outbox"
            sr, sc = (Path(o.path) for o in write_results(routed[0], URGENT, overlay, outbox))
            pacs = PacsNode("127.0.0.1", orthanc.dicom_port, "ORTHANC", "CXR_TRIAGE", 30.0)
            assert len(send([sr, sc], pacs)) == 2  # as the deliverer sends them
            assert len(orthanc.instances_in_study(pydicom.dcmread(sr).StudyInstanceUID)) == 3
            time.sleep(3)
            assert received(inbox) == expected
        # the receiver is down: the store fails, Orthanc keeps the instance for a retry
        storescu(late, orthanc.dicom_port, "MODALITY")
        wait_until(
            lambda: "will retry" in orthanc.log.read_text(), 30, "the failed store logged", logs
        )
        with running(["listen"], env, logs[1]):
            wait_until(lambda: "listening" in logs[1].read_text(), 60, "listen again", logs)
            time.sleep(1.5)  # past the retry interval
            # the next arrival (any instance) gives the script its turn to retry
            storescu(not_routed[1], orthanc.dicom_port, "MODALITY")
            storescu(ct_dicom(staging / "ct-2.dcm"), orthanc.dicom_port, "MODALITY")
            wait_until(lambda: uid_of(late) in received(inbox), 60, "the retried image", logs)
        assert received(inbox) == {*expected, uid_of(late)}
        assert "sent on retry" in orthanc.log.read_text()
    finally:
        orthanc.stop()
