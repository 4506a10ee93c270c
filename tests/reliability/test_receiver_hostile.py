"""The DICOM receiver (``cxr-triage listen``) as a red team met it (issue 20), each finding on
a real ``listen`` process: large objects under ``prlimit``, a deflate bomb, an object past
the size limit, slow and flooding senders, a receiver killed mid-transfer, a UID clash
through the real watcher and intake.

Memory is the process's own high-water mark (``VmHWM``) against its idle resident size:
the page cache that holds what was written is not the receiver's memory.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import threading
import time
from pathlib import Path

import pydicom
import pytest

from tests.pacs.hostile import (
    Dripper,
    bare_connections,
    echo,
    listen_process,
    peak_rss_kib,
    radiograph_header,
    send_file,
    write_deflate_bomb,
    write_sparse_radiograph,
)
from tests.processes import cli, rows, running, service_env
from tests.reliability.bombs import deflate_bomb
from tests.support import rss_kib, wait_until

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
NODE = "CXR_TRIAGE"
#: The listen process's address-space cap: idle it maps about 380 MiB; streaming four
#: objects at once adds threads (8 MiB stacks), not buffers.
ADDRESS_SPACE = 1024 * MIB
#: What four large C-STOREs at once may add to the receiver's resident memory.
FLAT_MIB = 64


def big_radiograph(path: Path, side: int) -> Path:
    """A valid 16-bit CR of ``side`` x ``side`` (zeros), sparse on disk."""
    return write_sparse_radiograph(path, radiograph_header(side, side), side * side * 2)


def test_large_objects_at_once_stream_to_disk_with_flat_memory_under_prlimit(tmp_path: Path):
    """Four 120 MB C-STOREs at once (each within ingest's pixel limit, so each must be
    accepted): every one answered Success and complete in the inbox, files 0640, while the
    receiver's peak resident memory stays within FLAT_MIB of idle. Before: each object was
    held whole (and copied) in memory; four reached 1.8 GB, or MemoryError under a cap."""
    side = 7746  # 60 MP at 16 bits: 120 MB of Pixel Data
    sources = [big_radiograph(tmp_path / f"big{i}.dcm", side) for i in range(4)]
    # Room for the four beside the readiness C-ECHO's connection, which the node may still
    # count for a moment after its release (the per-peer limit has tests of its own).
    with listen_process(
        tmp_path / "node",
        address_space_bytes=ADDRESS_SPACE,
        CXR_LISTEN_MAX_ASSOCIATIONS_PER_PEER="6",
    ) as node:
        idle = rss_kib(node.pid)
        statuses: dict[int, int | None] = {}

        def send(index: int) -> None:
            statuses[index] = send_file(node.port, sources[index], called=NODE)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        peak = peak_rss_kib(node.pid)
        assert statuses == {0: 0, 1: 0, 2: 0, 3: 0}, node.log.read_text()[-3000:]
    grown_mib = (peak - idle) / 1024
    assert grown_mib < FLAT_MIB, f"the receiver grew by {grown_mib:.0f} MiB"
    for source in sources:
        uid = pydicom.dcmread(source, stop_before_pixels=True).SOPInstanceUID
        received = node.inbox / f"{uid}.dcm"
        # the data set arrived whole: the same length after the (rewritten) file meta
        assert received.stat().st_size >= source.stat().st_size - 64
        assert stat.S_IMODE(received.stat().st_mode) == 0o600  # CXR_UMASK 0077, the default
    assert list(node.inbox.rglob("*.part")) == []


def test_an_object_past_the_size_limit_is_cut_off_as_it_arrives(tmp_path: Path):
    """Past CXR_LISTEN_MAX_OBJECT_BYTES the association is aborted while the object is still
    arriving: no status at all (never Success), nothing kept, memory flat. Before: the whole
    object was read into memory, then answered 0xA700."""
    source = big_radiograph(tmp_path / "big.dcm", 9000)  # 162 MB
    with listen_process(tmp_path / "node", CXR_LISTEN_MAX_OBJECT_BYTES=str(32 * MIB)) as node:
        idle = rss_kib(node.pid)
        status = send_file(node.port, source, called=NODE)
        peak = peak_rss_kib(node.pid)
        wait_until(lambda: not list(node.inbox.rglob("*.part")), 10, "the partial file removed")
        text = node.log.read_text()
    assert status is None
    assert "over the receiver's 33,554,432 byte limit" in text
    assert [p for p in node.inbox.rglob("*") if p.is_file() and p.suffix != ".lock"] == []
    assert (peak - idle) / 1024 < FLAT_MIB


@pytest.mark.parametrize("bomb", ["pixels_over_the_limit", "private_element"])
def test_a_deflate_bomb_is_refused_without_being_inflated(tmp_path: Path, bomb: str):
    """A ~250 KB deflated object inflating to ~250 MB (under ingest's inflate cap, so the
    old header read inflated it whole: 622 MB, then Success). Now refused before Success,
    and the receiver's memory does not move."""
    if bomb == "pixels_over_the_limit":  # 11000 x 11000: 121 MP > MAX_PIXELS
        path = write_deflate_bomb(tmp_path / "bomb.dcm", 11_000, 11_000)
        expected = "not accepted: too_large"
    else:  # a 250 MiB private element before a valid 64 x 64 image
        path = deflate_bomb(tmp_path / "bomb.dcm", inflated_bytes=250 * MIB)
        expected = "not accepted: too_large"
    assert path.stat().st_size < 1 * MIB
    with listen_process(tmp_path / "node", address_space_bytes=ADDRESS_SPACE) as node:
        idle = rss_kib(node.pid)
        status = send_file(
            node.port, path, called=NODE, syntax=pydicom.uid.DeflatedExplicitVRLittleEndian
        )
        peak = peak_rss_kib(node.pid)
        text = node.log.read_text()
    assert status == 0xC000, text[-3000:]
    assert expected in text
    assert [p for p in node.inbox.iterdir() if not p.name.startswith(".")] == []
    assert (peak - idle) / 1024 < FLAT_MIB


def test_ten_slow_associations_do_not_shut_out_a_c_echo(tmp_path: Path):
    """Ten associations dripping a byte a second into a P-DATA PDU, from another host: a
    C-ECHO from a modality is still answered within 2 s, and every dripper is cut off at
    the PDU deadline. Before: the eleventh association was refused for as long as the
    drip went on (95 s in the review)."""
    with listen_process(
        tmp_path / "node",
        CXR_LISTEN_PEERS="*@127.0.0.0/8",
        CXR_LISTEN_PDU_TIMEOUT_S="5",
        CXR_LISTEN_MAX_ASSOCIATIONS_PER_PEER="10",
        CXR_LISTEN_MAX_ASSOCIATIONS="16",
    ) as node:
        drippers = [
            Dripper(node.port, NODE, bind="127.0.0.2", interval_s=1.0).start() for _ in range(10)
        ]
        try:
            assert all(d.established for d in drippers)
            answered, seconds = echo(node.port, called=NODE)
            assert answered and seconds < 2.0, seconds
            wait_until(
                lambda: all(d.cut_off_after is not None for d in drippers),
                30,
                "every dripper cut off",
                [node.log],
            )
        finally:
            for dripper in drippers:
                dripper.stop()
        text = node.log.read_text()
    assert max(d.cut_off_after or 0 for d in drippers) < 5 + 4
    assert "bytes of a PDU in 5 s (the PDU limit)" in text


def test_a_flood_of_bare_connections_does_not_shut_out_a_modality(tmp_path: Path, small_cr):
    """400 TCP connections that never speak, from one host: its connections past the
    per-peer limit are closed at accept; a modality on another address still gets its
    C-ECHO and C-STORE through at once. Before: 2.5 min of refusals."""
    with listen_process(tmp_path / "node", CXR_LISTEN_PEERS="*@127.0.0.0/8") as node:
        with bare_connections(node.port, 400, bind="127.0.0.3"):
            started = time.monotonic()
            answered, _ = echo(node.port, called=NODE)
            status = send_file(node.port, small_cr, called=NODE)
            seconds = time.monotonic() - started
        text = node.log.read_text()
    assert answered and status == 0, text[-3000:]
    assert seconds < 3.0
    assert "refused a connection from 127.0.0.3" in text
    assert text.count("refused a connection from 127.0.0.3") == 1  # logged once, not 396 times


def test_a_receiver_killed_mid_transfer_leaves_nothing_at_its_next_start(tmp_path: Path):
    """SIGKILL while an object arrives: the partial file (never acknowledged) is removed by
    the next start. Before: `.part` files of a killed receiver stayed for ever."""
    source = big_radiograph(tmp_path / "big.dcm", 9000)
    root = tmp_path / "node"
    with listen_process(root) as node:
        sender = threading.Thread(
            target=send_file, args=(node.port, source), kwargs={"called": NODE}
        )
        sender.start()
        wait_until(
            lambda: any(p.stat().st_size > 10 * MIB for p in node.inbox.rglob("*.part")),
            60,
            "an object half received",
        )
        os.kill(node.pid, signal.SIGKILL)
        node.process.wait()
        sender.join(timeout=60)
        assert list(node.inbox.rglob("*.part")), "the kill came too late to leave a partial file"
    # an older receiver's leftover in the inbox itself
    legacy = root / "inbox" / ".1.2.826.0.1.3680043.8.498.1.0123abcd.part"
    legacy.write_bytes(b"\0" * 1000)
    with listen_process(root) as node:
        assert list(node.inbox.rglob("*.part")) == []
        assert not legacy.exists()
        assert "removed 2 partial object(s)" in node.log.read_text()


@pytest.fixture
def small_cr(tmp_path: Path) -> Path:
    return big_radiograph(tmp_path / "small.dcm", 64)


def test_a_uid_clash_keeps_both_objects_and_the_intake_quarantines_the_second(tmp_path: Path):
    """Object B (another patient) sent under A's SOP Instance UID while A waits in the inbox:
    both answered Success, A's file untouched, and the real watcher's intake gives A the
    row and quarantines B as a duplicate with a sidecar that says why. The same bytes sent
    again: Success, no third file. Before: B was renamed over A; A never got a row."""
    a = radiograph_header(64, 64, PatientID="PATIENT-A")
    b = radiograph_header(64, 64, PatientID="PATIENT-B")
    b.SOPInstanceUID = a.SOPInstanceUID
    path_a = write_sparse_radiograph(tmp_path / "a.dcm", a, 64 * 64 * 2)
    path_b = write_sparse_radiograph(tmp_path / "b.dcm", b, 64 * 64 * 2)
    database_url = f"sqlite:///{tmp_path / 'w.sqlite3'}"
    # a quiet period long enough for the three sends to land while A still waits in it
    env = service_env(tmp_path, database_url, None, CXR_QUIET_PERIOD_S="4")
    cli(["db", "upgrade"], env)
    watch_log = tmp_path / "watch.log"
    with (
        running(["watch"], env, watch_log),
        listen_process(tmp_path / "node", CXR_INBOX=str(tmp_path / "inbox")) as node,
    ):
        assert send_file(node.port, path_a, called=NODE) == 0
        first = (node.inbox / f"{a.SOPInstanceUID}.dcm").read_bytes()
        assert send_file(node.port, path_b, called=NODE) == 0
        assert send_file(node.port, path_a, called=NODE) == 0  # a true duplicate
        assert (node.inbox / f"{a.SOPInstanceUID}.dcm").read_bytes() == first
        kept = sorted(p.name for p in node.inbox.iterdir() if not p.name.startswith("."))
        assert len(kept) == 2, kept
        duplicates = tmp_path / "quarantine" / "duplicate"
        wait_until(
            lambda: len(rows(database_url)) == 1 and list(duplicates.glob("*.json")),
            60,
            "the intake to admit A and quarantine B",
            [watch_log],
        )
    [row] = rows(database_url)
    assert row.sop_instance_uid == a.SOPInstanceUID
    assert row.patient_id == "PATIENT-A"
    sidecars = list(duplicates.glob("*.json"))
    assert len(sidecars) == 1
    sidecar = json.loads(sidecars[0].read_text())
    assert sidecar["detail"] == "another file with the same SOP Instance UID was already received"
    assert sidecar["duplicate_of_worklist_id"] == row.id
    quarantined = sidecars[0].with_suffix("")
    assert pydicom.dcmread(quarantined, stop_before_pixels=True).PatientID == "PATIENT-B"
