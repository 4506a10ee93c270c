"""Scenario 6: hostile and broken input through the real watcher and worker.

Each file ends in quarantine under a named reason (or, for pydicom's corpus, wherever its
content sends it, never as a ``failed`` row: that would be a reader bug); the symlink's
target outside the inbox is never read, moved or changed; a file that keeps growing is not
taken until it stops; a directory named like an image is left alone; and afterwards the
same worker still scores a healthy file.
"""

from __future__ import annotations

import itertools
import os
import struct
import threading
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydicom.data import get_testdata_files

from db.models import FINAL_STATUSES, Status
from tests.corpus import copy_jpeg, cr_dicom, dataset_jpegs, truncated_copy
from tests.reliability.stack import Stack, sha256
from tests.support import wait_until
from tests.support.servers import PrivateRedis

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.tf, pytest.mark.timeout(480)]

WEIRD_NAME = "a..b/../ünïcødé 名前 ..;rm -rf.dcm".replace("/", "_")


def _png_bomb(path: Path, side: int = 60_000) -> Path:
    """A valid PNG signature and IHDR claiming ``side`` x ``side`` grey pixels, then a tiny
    zlib stream: a few hundred bytes that would decode to 3.6 GB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (side + 1) * 64, 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat))
    return path


def _huge_element_length(source: Path, path: Path) -> Path:
    """A real DICOM whose Pixel Data element claims 1 GiB (the file holds far less)."""
    data = bytearray(source.read_bytes())
    tag = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian
    at = data.rindex(tag)
    vr = bytes(data[at + 4 : at + 6])
    assert vr in (b"OW", b"OB")
    data[at + 8 : at + 12] = struct.pack("<I", 1 << 30)
    path.write_bytes(bytes(data))
    return path


def _stage(stack: Stack) -> dict[str, str]:
    """Write the hostile files into staging; returns the expected reason by inbox name."""
    s = stack.staging
    jpegs = dataset_jpegs(3)
    (s / "empty.dcm").write_bytes(b"")
    (s / "random.dcm").write_bytes(os.urandom(50_000))
    whole = cr_dicom(jpegs[0], s / "whole.dcm")
    truncated_copy(whole, s / "truncated.dcm", 0.5)
    truncated_copy(jpegs[1], s / "truncated.jpeg", 0.4)
    giant = cr_dicom(jpegs[0], s / "giant.dcm")
    raw = bytearray(giant.read_bytes())  # Rows and Columns (0028,0010/0011) US, VR explicit
    for element in (b"\x28\x00\x10\x00US\x02\x00", b"\x28\x00\x11\x00US\x02\x00"):
        at = raw.index(element) + len(element)
        raw[at : at + 2] = struct.pack("<H", 60_000)
    giant.write_bytes(bytes(raw))
    _png_bomb(s / "bomb.png")
    (s / WEIRD_NAME).write_bytes(b"not an image at all, whatever the name says\n" * 50)
    whole.unlink()
    other = cr_dicom(jpegs[2], s / "other.dcm")  # its own UIDs: not a duplicate of the above
    _huge_element_length(other, s / "huge-length.dcm")
    other.unlink()
    return {
        "empty.dcm": "empty_file",
        "random.dcm": "not_an_image",
        "truncated.dcm": "truncated",
        "truncated.jpeg": "truncated",
        "giant.dcm": "too_large",
        "bomb.png": "too_large",
        WEIRD_NAME: "not_an_image",
        "huge-length.dcm": "truncated",
    }


def test_hostile_files_end_in_quarantine_and_the_worker_stays_healthy(
    tmp_path: Path, pg_url: str, private_redis: PrivateRedis, model_dir: Path
) -> None:
    quiet_s = 5.0  # ten chunks' time: a writer that pauses this long has stopped, by rule
    stack = Stack(tmp_path, pg_url, private_redis.url, model_dir, CXR_QUIET_PERIOD_S=f"{quiet_s:g}")
    stack.upgrade()
    expected = _stage(stack)
    outside = tmp_path / "outside" / "secret.dcm"  # a file the inbox must never reach
    outside.parent.mkdir()
    cr_dicom(dataset_jpegs(1)[0], outside)
    outside_sha, outside_mtime = sha256(outside), outside.stat().st_mtime_ns
    corpus = sorted(Path(p) for p in get_testdata_files("*") if Path(p).is_file())
    growing = stack.inbox / "growing.dcm"
    writes: list[datetime] = []  # when each chunk was written

    def grow() -> None:  # a sender writing a 60 s transfer, one chunk each 0.5 s
        # Nothing else in this loop: a database query here once stalled the writer past the
        # quiet period on a loaded CI machine, and a stalled sender's file may be taken.
        with growing.open("wb") as stream:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                stream.write(os.urandom(4096))
                stream.flush()
                writes.append(datetime.now(UTC))
                time.sleep(0.5)

    with stack.worker("worker", 1) as worker, stack.watcher() as watcher:
        writer = threading.Thread(target=grow)
        writer.start()
        for name in expected:
            stack.drop(stack.staging / name)
        (stack.inbox / "x.dcm").mkdir()  # a directory named like an image
        (stack.inbox / "link.dcm").symlink_to(outside)
        for n, path in enumerate(corpus):
            stack.drop(path, f"pydicom/{n:03d}_{path.name}")
        total = len(expected) + 1 + len(corpus)  # + the symlink

        def settled() -> bool:
            left = [p for p in stack.inbox.rglob("*") if not p.is_dir() and p != growing]
            return not left and all(r.status in FINAL_STATUSES for r in stack.rows())

        wait_until(settled, 240, "the hostile files final and filed", stack.logs)
        writer.join(timeout=120)
        assert not writer.is_alive() and len(writes) >= 100, "the writer wrote for 60 s"
        stall = max(later - earlier for earlier, later in itertools.pairwise(writes))
        assert stall.total_seconds() < quiet_s, f"the writer itself paused {stall}"
        wait_until(
            lambda: any(r.source_name == "growing.dcm" for r in stack.rows()),
            60,
            "the grown file taken",
            stack.logs,
        )
        grown = next(r for r in stack.rows() if r.source_name == "growing.dcm")
        assert grown.received_at > writes[-1], "never taken while it was growing"
        healthy = copy_jpeg(dataset_jpegs(4)[3], stack.staging / "healthy.jpeg")
        stack.drop(healthy)
        wait_until(
            lambda: any(
                r.source_name == "healthy.jpeg" and r.status == Status.DONE for r in stack.rows()
            ),
            120,
            "a healthy file scored after the hostile ones",
            stack.logs,
        )
        wait_until(
            lambda: sorted(p.name for p in stack.inbox.rglob("*") if not p.is_dir()) == [],
            60,
            "an empty inbox",
            stack.logs,
        )
        assert worker.poll() is None and watcher.poll() is None
    by_name = {r.source_name: r for r in stack.rows()}
    found = {n: (by_name[n].status, by_name[n].reason) for n in expected if n in by_name}
    assert found == {n: (Status.REJECTED, r) for n, r in expected.items()}
    for name, reason in expected.items():
        row = by_name[name]
        assert (row.status, row.reason) == (Status.REJECTED, reason), name
        destination = Path(row.archived_path)
        assert destination.parent == stack.quarantine / reason, name
        assert destination.is_file() and Path(str(destination) + ".json").is_file(), name
    assert by_name["growing.dcm"].status == Status.REJECTED
    # The symlink: quarantined as a link, unread; its target untouched.
    links = list((stack.quarantine / "unsafe_path").glob("*.dcm"))
    assert len(links) == 1 and links[0].is_symlink()
    assert outside.is_file() and sha256(outside) == outside_sha
    assert outside.stat().st_mtime_ns == outside_mtime
    assert "link.dcm" not in by_name, "a symlink never gets a row (never read)"
    # A directory named like an image is not a file: no row, not moved, no crash.
    assert (stack.inbox / "x.dcm").is_dir() and "x.dcm" not in by_name
    # pydicom's corpus: every file filed, none failed (a failure would be a reader bug).
    corpus_rows = [r for n, r in by_name.items() if n.startswith("pydicom/")]
    assert all(r.status in (Status.REJECTED, Status.DONE) for r in corpus_rows), [
        (r.source_name, r.status, r.reason_detail) for r in corpus_rows if r.status == "failed"
    ]
    assert all(r.reason for r in corpus_rows if r.status == Status.REJECTED)
    duplicates = list((stack.quarantine / "duplicate").glob("*.dcm"))
    assert len(corpus_rows) + len(duplicates) == len(corpus)
    assert len(stack.filed()) == total + 1 + 1  # + growing + healthy
    stack.assert_filed_once()
