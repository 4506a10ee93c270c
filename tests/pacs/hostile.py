"""Misbehaving DICOM senders and the objects they send, for the receiver's hostile tests.

Huge objects are written as sparse files (a header, then a Pixel Data element whose value is
a hole) and sent with pynetdicom's chunked mode, which streams them from disk: the sender
holds a PDU at a time, so only the receiver's memory is being measured. The deflate bomb is
built by deflating a generator of zeros. The slow and flooding senders work on raw sockets:
an association is opened with pynetdicom, then its socket is written to by hand.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    generate_uid,
)
from pynetdicom import AE, _config

from tests.ingest.dicom_factory import base_dataset
from tests.processes import CLI
from tests.support import free_port, wait_until

CR = UID("1.2.840.10008.5.1.4.1.1.1")
VERIFICATION = "1.2.840.10008.1.1"
_CHUNKED_SEND = threading.Lock()


def radiograph_header(rows: int, columns: int, bits: int = 16, **attributes: object) -> Dataset:
    """A CR chest PA header (as ingest's factory makes it) with the Image Pixel module."""
    ds = base_dataset(rows, columns)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def _meta(ds: Dataset, syntax: UID, instance_uid: str | None = None) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = instance_uid or ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    return meta


def _encoded(ds: Dataset) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    return buffer.getvalue()


def _pixel_data_header(length: int) -> bytes:
    return struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, length)


def write_sparse_radiograph(
    path: Path, ds: Dataset, pixel_bytes: int, *, affected_uid: str | None = None
) -> Path:
    """``ds`` with a native Pixel Data of ``pixel_bytes`` zeros, as a sparse file.
    ``affected_uid``: the file meta's SOP Instance UID, which a chunked C-STORE sends as
    the command's Affected SOP Instance UID (default: the data set's)."""
    ds.file_meta = _meta(ds, ExplicitVRLittleEndian, affected_uid)
    with path.open("wb") as stream:
        stream.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(stream, ds.file_meta)  # type: ignore[arg-type]
        stream.write(_encoded(ds))
        stream.write(_pixel_data_header(pixel_bytes))
        stream.truncate(stream.tell() + pixel_bytes)
    return path


def write_deflate_bomb(path: Path, rows: int, columns: int) -> Path:
    """A Deflated Explicit VR Little Endian CR whose 16-bit Pixel Data of zeros inflates to
    ``rows * columns * 2`` bytes; the file is about a thousandth of that."""
    ds = radiograph_header(rows, columns)
    ds.file_meta = _meta(ds, DeflatedExplicitVRLittleEndian)
    pixel_bytes = rows * columns * 2
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(1024 * 1024)
    with path.open("wb") as stream:
        stream.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(stream, ds.file_meta)  # type: ignore[arg-type]
        stream.write(compressor.compress(_encoded(ds) + _pixel_data_header(pixel_bytes)))
        left = pixel_bytes
        while left:
            step = min(left, len(zeros))
            stream.write(compressor.compress(zeros[:step]))
            left -= step
        stream.write(compressor.flush())
    return path


def send_file(
    port: int,
    path: Path,
    *,
    called: str,
    calling: str = "MODALITY",
    syntax: UID = ExplicitVRLittleEndian,
    bind: str | None = None,
    max_pdu: int = 0,
) -> int | None:
    """C-STORE ``path`` streamed from disk (pynetdicom's chunked mode); the status, or None
    when there was no response (refused association, aborted, connection lost)."""
    ae = AE(ae_title=calling)
    ae.maximum_pdu_size = max_pdu
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    ae.add_requested_context(CR, [syntax])
    kwargs = {"bind_address": (bind, 0)} if bind else {}
    assoc = ae.associate("127.0.0.1", port, ae_title=called, **kwargs)  # type: ignore[arg-type]
    if not assoc.is_established:
        return None
    try:
        with _chunked_sending():
            status = assoc.send_c_store(path)
    except (OSError, RuntimeError, ValueError):
        status = Dataset()
    finally:
        if assoc.is_established:
            assoc.release()
    return int(status.Status) if "Status" in status else None


_senders = 0
_previous_switch = False


@contextmanager
def _chunked_sending() -> Iterator[None]:
    """pynetdicom's chunked sending is a process-wide switch: on while any sender here runs,
    then back to what it was."""
    global _senders, _previous_switch
    with _CHUNKED_SEND:
        if _senders == 0:
            _previous_switch = _config.STORE_SEND_CHUNKED_DATASET
            _config.STORE_SEND_CHUNKED_DATASET = True
        _senders += 1
    try:
        yield
    finally:
        with _CHUNKED_SEND:
            _senders -= 1
            if _senders == 0:
                _config.STORE_SEND_CHUNKED_DATASET = _previous_switch


def echo(
    port: int, *, called: str, calling: str = "MONITOR", bind: str | None = None
) -> tuple[bool, float]:
    """A C-ECHO on a new association: (answered Success, seconds it took)."""
    started = time.monotonic()
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(VERIFICATION)
    kwargs = {"bind_address": (bind, 0)} if bind else {}
    assoc = ae.associate("127.0.0.1", port, ae_title=called, **kwargs)  # type: ignore[arg-type]
    ok = False
    if assoc.is_established:
        try:
            ok = assoc.send_c_echo().get("Status") == 0x0000
        finally:
            assoc.release()
    return ok, time.monotonic() - started


@dataclass
class Dripper:
    """An association that sends a P-DATA-TF header, then one byte every ``interval_s``
    (the slow-loris sender of issue 20). ``cut_off_after`` is set when the node closed it."""

    port: int
    called: str
    calling: str = "MODALITY"
    bind: str | None = None
    interval_s: float = 1.0
    established: bool = False
    started_at: float = 0.0
    cut_off_after: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Dripper:
        ae = AE(ae_title=self.calling)
        ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = 600
        ae.add_requested_context(CR, [ExplicitVRLittleEndian])
        kwargs = {"bind_address": (self.bind, 0)} if self.bind else {}
        self._assoc = ae.associate("127.0.0.1", self.port, ae_title=self.called, **kwargs)  # type: ignore[arg-type]
        self.established = self._assoc.is_established
        if self.established:
            self._thread = threading.Thread(target=self._drip, daemon=True)
            self._thread.start()
        return self

    def _drip(self) -> None:
        raw = self._assoc.dul.socket.socket
        self.started_at = time.monotonic()
        try:
            raw.sendall(struct.pack(">BBL", 0x04, 0, 4096))  # a P-DATA-TF of 4096 bytes...
            while not self._stop.wait(self.interval_s):
                raw.sendall(b"\x00")  # ...that never completes
                if not self._assoc.is_established or self._assoc.is_aborted:
                    break
        except OSError:
            pass
        if not self._stop.is_set():
            self.cut_off_after = time.monotonic() - self.started_at

    def stop(self) -> None:
        self._stop.set()
        if self.established:
            self._assoc.abort()


@contextmanager
def bare_connections(port: int, count: int, bind: str) -> Iterator[list[socket.socket]]:
    """``count`` TCP connections that never say a word (closed at the end)."""
    held: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((bind, 0))
            sock.settimeout(5)
            try:
                sock.connect(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            held.append(sock)
        yield held
    finally:
        for sock in held:
            sock.close()


def peak_rss_kib(pid: int) -> int:
    """VmHWM: the most resident memory the process has ever had, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


@dataclass
class ListenProcess:
    """``cxr-triage listen`` as its own process (optionally under ``prlimit``)."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path
    inbox: Path

    @property
    def pid(self) -> int:
        """The Python process (prlimit execs it: same pid)."""
        return self.process.pid


@contextmanager
def listen_process(
    root: Path,
    *,
    address_space_bytes: int | None = None,
    **settings: str,
) -> Iterator[ListenProcess]:
    """Start ``listen`` on a free port into ``root/inbox``; wait until it answers C-ECHO."""
    import os

    port = free_port()
    inbox = Path(settings.get("CXR_INBOX", root / "inbox"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    env.update(
        CXR_DATA_DIR=str(root / "data"),
        CXR_INBOX=str(inbox),
        CXR_LISTEN_PORT=str(port),
        CXR_LISTEN_HOST="127.0.0.1",
        CXR_LISTEN_AE_TITLE="CXR_TRIAGE",
        CXR_LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
        MALLOC_ARENA_MAX="2",  # a thread's malloc arena reserves 64 MiB of address space
    )
    env.update(settings)
    argv = [*CLI, "listen"]
    if address_space_bytes is not None:
        argv = ["prlimit", f"--as={address_space_bytes}", "--", *argv]
    log = root / "listen.log"
    root.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    node = ListenProcess(process, port, log, inbox)
    try:
        wait_until(
            lambda: process.poll() is not None or echo(port, called="CXR_TRIAGE")[0],
            90,
            "the listen process to answer C-ECHO",
            [log],
        )
        assert process.poll() is None, log.read_text()[-3000:]
        yield node
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def new_uid() -> str:
    return str(generate_uid())


PYTHON = sys.executable
