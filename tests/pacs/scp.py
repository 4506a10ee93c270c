"""Real DICOM peers on free localhost ports, started and stopped by a test: a pynetdicom
Storage SCP that answers chosen statuses and accepts chosen transfer syntaxes, and a bare TCP
peer that answers every association request with a chosen A-ASSOCIATE-RJ."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from pacs.store import PacsNode
from tests.support import free_port

SCP_AE_TITLE = "TEST_PACS"


@dataclass
class StorageSCP:
    port: int
    server: ThreadedAssociationServer
    status: int = 0x0000
    #: Answered first, one per C-STORE, before ``status`` (a PACS that recovers).
    statuses: list[int] = field(default_factory=list)
    received: list[Dataset] = field(default_factory=list)
    priorities: list[int] = field(default_factory=list)
    associations: int = 0
    delay_s: float = 0.0  # each C-STORE answers after this long (a slow or hung PACS)
    calls: int = 0  # C-STOREs begun (answered or not)
    wake: threading.Event = field(default_factory=threading.Event)  # ends every delay now
    lock: threading.Lock = field(default_factory=threading.Lock)

    def node(self, **overrides: object) -> PacsNode:
        values: dict[str, object] = {
            "host": "127.0.0.1",
            "port": self.port,
            "called_ae_title": SCP_AE_TITLE,
            "timeout_s": 5.0,
        }
        values.update(overrides)
        return PacsNode(**values)  # type: ignore[arg-type]


@contextmanager
def storage_scp(
    port: int | None = None,
    *,
    syntaxes: Sequence[str] = ALL_TRANSFER_SYNTAXES,
    calling_ae_titles: Sequence[str] = (),
) -> Iterator[StorageSCP]:
    """A Storage SCP answering ``scp.statuses`` then ``scp.status`` to each C-STORE and
    keeping what it got (on ``port``, or a free one); it counts the associations it
    accepted. It accepts ``syntaxes`` only (default: every one, JPEG baseline included),
    and with ``calling_ae_titles`` only those callers (others: rejected permanently)."""
    ae = AE(ae_title=SCP_AE_TITLE)
    for context in StoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, list(syntaxes))
    ae.add_supported_context(Verification)
    ae.require_called_aet = True
    if calling_ae_titles:
        ae.require_calling_aet = list(calling_ae_titles)
    port = port or free_port()
    holder: dict[str, StorageSCP] = {}

    def on_store(event: evt.Event) -> int:
        scp = holder["scp"]
        with scp.lock:
            scp.calls += 1
        if scp.delay_s:
            scp.wake.wait(scp.delay_s)
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        with scp.lock:
            scp.received.append(dataset)
            scp.priorities.append(int(event.request.Priority))
            return scp.statuses.pop(0) if scp.statuses else scp.status

    def on_accepted(event: evt.Event) -> None:
        scp = holder["scp"]
        with scp.lock:
            scp.associations += 1

    handlers = [(evt.EVT_C_STORE, on_store), (evt.EVT_ACCEPTED, on_accepted)]
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    holder["scp"] = StorageSCP(port, server)
    try:
        yield holder["scp"]
    finally:
        holder["scp"].wake.set()
        server.shutdown()


@dataclass
class RejectingPeer:
    port: int
    requests: int = 0

    def node(self, **overrides: object) -> PacsNode:
        values: dict[str, object] = {
            "host": "127.0.0.1",
            "port": self.port,
            "called_ae_title": SCP_AE_TITLE,
            "timeout_s": 5.0,
        }
        values.update(overrides)
        return PacsNode(**values)  # type: ignore[arg-type]


@contextmanager
def rejecting_peer(result: int, source: int, reason: int) -> Iterator[RejectingPeer]:
    """A TCP peer that reads each A-ASSOCIATE-RQ and answers the A-ASSOCIATE-RJ PDU
    (PS3.8 9.3.4) ``result`` (1 permanent, 2 transient), ``source``, ``reason``."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    peer = RejectingPeer(server.getsockname()[1])
    stop = threading.Event()
    reject = struct.pack(">BBIBBBB", 0x03, 0x00, 4, 0x00, result, source, reason)

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            # Patient as a PACS is: a requestor on a loaded machine (CI) may take seconds
            # between its TCP connect and its A-ASSOCIATE-RQ; closing on it earlier read as
            # an abort, not the rejection under test. A slow or broken requestor must not
            # end this thread either: the next one is still answered.
            with connection, contextlib.suppress(OSError):
                connection.settimeout(60)
                header = _read_exactly(connection, 6)
                if len(header) < 6 or header[0] != 0x01:
                    continue
                _read_exactly(connection, struct.unpack(">I", header[2:6])[0])
                peer.requests += 1
                connection.sendall(reject)
                # PS3.8 9.1.3: after an A-ASSOCIATE-RJ the requestor closes the connection;
                # closing first races the requestor's reading of the PDU
                while connection.recv(1024):
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield peer
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


def _read_exactly(connection: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = connection.recv(count - len(data))
        if not chunk:
            break
        data += chunk
    return data
