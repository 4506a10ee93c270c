"""C-STORE to a real pynetdicom Storage SCP started by the test on a free localhost port."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from pacs.outbox import write_results
from pacs.store import PacsNode, StoreError, StorePriority, _associate, send
from tests.pacs.scp import SCP_AE_TITLE, StorageSCP, free_port, rejecting_peer, storage_scp
from tests.support.pacs import PATIENT_ID, URGENT


@pytest.fixture
def scp() -> Iterator[StorageSCP]:
    with storage_scp() as running:
        yield running


@pytest.fixture
def results(source_file: Path, overlay, tmp_path: Path) -> list[Path]:
    return [Path(o.path) for o in write_results(source_file, URGENT, overlay, tmp_path / "outbox")]


def test_sr_and_sc_arrive_intact(scp, results):
    stored = send(results, scp.node(), StorePriority.HIGH)
    assert [s.status for s in stored] == [0, 0]
    assert len(scp.received) == 2
    sent = [pydicom.dcmread(p) for p in results]
    by_uid = {ds.SOPInstanceUID: ds for ds in scp.received}
    assert set(by_uid) == {ds.SOPInstanceUID for ds in sent}
    for original in sent:
        arrived = by_uid[original.SOPInstanceUID]
        assert arrived.SOPClassUID == original.SOPClassUID
        assert arrived.StudyInstanceUID == original.StudyInstanceUID
        assert arrived.PatientID == PATIENT_ID
    sc = next(ds for ds in sent if "PixelData" in ds)
    np.testing.assert_array_equal(by_uid[sc.SOPInstanceUID].pixel_array, sc.pixel_array)
    assert scp.priorities == [StorePriority.HIGH, StorePriority.HIGH]


def test_wrong_called_ae_title_is_a_clear_error(scp, results):
    with pytest.raises(StoreError, match=r"WRONG_AE@127\.0\.0\.1:\d+ rejected"):
        send(results, scp.node(called_ae_title="WRONG_AE"))
    assert scp.received == []


def test_a_closed_port_is_a_clear_error_within_the_timeout(results):
    node = PacsNode("127.0.0.1", free_port(), SCP_AE_TITLE, timeout_s=2.0)
    with pytest.raises(StoreError, match="could not be reached"):
        send(results, node)


def test_a_failure_status_is_a_store_error(scp, results):
    scp.status = 0xA700  # Out of Resources
    with pytest.raises(StoreError, match="0xA700"):
        send(results, scp.node())


def test_a_warning_status_counts_as_stored(scp, results):
    scp.status = 0xB000  # Coercion of Data Elements
    stored = send(results, scp.node())
    assert [s.status for s in stored] == [0xB000, 0xB000]


def test_invalid_ae_titles_are_refused_before_connecting():
    with pytest.raises(ValueError, match="AE title"):
        PacsNode("127.0.0.1", 104, "A_TITLE_LONGER_THAN_16")
    with pytest.raises(ValueError, match="AE title"):
        PacsNode("127.0.0.1", 104, "   ")


@pytest.mark.parametrize(
    ("rejection", "permanent", "words"),
    [
        ((1, 1, 1), True, "permanently: no reason given"),
        ((2, 3, 1), False, "congestion"),
    ],
    ids=["permanent", "congestion"],
)
def test_a_rejection_answered_before_the_requestor_looks_is_still_a_rejection(
    rejection, permanent, words
):
    """On a loaded machine the PACS's A-ASSOCIATE-RJ can arrive, and pynetdicom close the
    socket, before the requesting thread checks the connection; pynetdicom then reports an
    abort. Slowing that thread by a second makes the race certain: the answer must still be
    the PACS's rejection, permanent or not (CI failed this way, as "could not be reached")."""

    def slow_requestor(event: evt.Event) -> None:
        time.sleep(1.0)

    with rejecting_peer(*rejection) as peer:
        with pytest.raises(StoreError) as raised:
            _associate(
                peer.node(),
                [(str(Verification), ImplicitVRLittleEndian)],
                also=[(evt.EVT_REQUESTED, slow_requestor)],
            )
        assert peer.requests == 1
    assert words in str(raised.value) and "could not be reached" not in str(raised.value)
    assert raised.value.permanent is permanent


@pytest.mark.parametrize("rejection", [(0, 0, 0), (255, 9, 200)], ids=["zeros", "out-of-range"])
def test_a_malformed_rejection_is_an_abort_to_retry_never_a_crash(rejection) -> None:
    """A-ASSOCIATE-RJ values outside PS3.8 Table 9-21 (a broken or hostile peer): pynetdicom
    refuses to decode the PDU and aborts. The sender says so within its timeout and retries
    later; it never takes the garbage for a permanent rejection."""
    with rejecting_peer(*rejection) as peer:
        started = time.monotonic()
        with pytest.raises(StoreError) as raised:
            _associate(peer.node(timeout_s=5.0), [(str(Verification), ImplicitVRLittleEndian)])
        assert peer.requests == 1
    assert time.monotonic() - started < 30
    assert "could not be reached or aborted the association" in str(raised.value)
    assert raised.value.permanent is False
