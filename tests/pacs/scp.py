"""A real pynetdicom Storage SCP on a free localhost port, started and stopped by a test."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, evt
from pynetdicom.transport import ThreadedAssociationServer

from pacs.store import PacsNode
from tests.support import free_port

SCP_AE_TITLE = "TEST_PACS"


@dataclass
class StorageSCP:
    port: int
    server: ThreadedAssociationServer
    status: int = 0x0000
    received: list[Dataset] = field(default_factory=list)
    priorities: list[int] = field(default_factory=list)
    associations: int = 0
    delay_s: float = 0.0  # each C-STORE answers after this long (a slow or hung PACS)
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
def storage_scp(port: int | None = None) -> Iterator[StorageSCP]:
    """A Storage SCP answering ``scp.status`` to every C-STORE and keeping what it got
    (on ``port``, or a free one); it counts the associations it accepted."""
    ae = AE(ae_title=SCP_AE_TITLE)
    for context in StoragePresentationContexts:  # every syntax, JPEG baseline included
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.require_called_aet = True
    port = port or free_port()
    holder: dict[str, StorageSCP] = {}

    def on_store(event: evt.Event) -> int:
        scp = holder["scp"]
        if scp.delay_s:
            time.sleep(scp.delay_s)
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        with scp.lock:
            scp.received.append(dataset)
            scp.priorities.append(int(event.request.Priority))
        return scp.status

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
        server.shutdown()
