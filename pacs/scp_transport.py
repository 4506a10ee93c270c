"""The DICOM node's network layer: pynetdicom's server with the bounds a hostile network needs.

pynetdicom, as it ships, reads each PDU whole into memory at whatever length its header
claims (up to 4 GiB), keeps each C-STORE data set in memory until it is complete, waits on a
socket as long as one byte arrives now and then, performs the TLS handshake in the thread
that accepts every connection, and counts every open TCP connection, associated or not,
against one limit for everyone. Each of these let one peer take the node away from every
modality (issue 20). Here, through pynetdicom's own extension points
(:meth:`~pynetdicom.ae.ApplicationEntity.make_server` with a ``server_class`` and a
``request_handler``):

- :class:`NodeServer` decides at TCP accept, before a thread is spent: the peer's host must
  be a known one (:mod:`pacs.peers`), and its live connections, and everyone's, under
  :attr:`NetworkLimits.max_associations_per_peer` / :attr:`NetworkLimits.max_associations`.
  A flood from one host closes only that host's surplus connections. A deep listen backlog
  keeps a burst of connects from being dropped by the kernel.
- :class:`NodeRequestHandler` runs in the connection's own thread: the TLS handshake (with
  its own timeout), then the association, then clean-up of whatever the association left.
- :class:`BoundedAssociationSocket` reads each PDU against a deadline
  (:attr:`NetworkLimits.pdu_timeout_s`: a PDU dripped a byte at a time is cut off) and a
  length (:attr:`NetworkLimits.max_pdu_bytes`, the Maximum Length we announce; other PDUs
  :data:`MAX_CONTROL_PDU_BYTES`), and writes under the same deadline (a peer that stops
  reading cannot hold a thread for ever).
- :class:`StreamingDIMSE` hands each C-STORE data set, fragment by fragment as it arrives,
  to an :class:`ObjectSink` (a file, see :mod:`pacs.receiving`) through pynetdicom's own
  chunked-dataset path (``_data_set_file``), so memory stays flat whatever the size; the
  sink refuses past its byte limit, which aborts the association. Data sets of any other
  message, and command sets, are bounded at :data:`MAX_BUFFERED_BYTES`.
"""

from __future__ import annotations

import contextlib
import logging
import socketserver
import ssl
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from pacs.peers import PeerTable, parse_address

log = logging.getLogger(__name__)

#: A-ASSOCIATE-RQ/AC/RJ, A-RELEASE, A-ABORT: the largest legitimate request (a few hundred
#: presentation contexts, user identity) is tens of kB.
MAX_CONTROL_PDU_BYTES = 1024 * 1024
#: A command set, or the data set of a message other than C-STORE (none is negotiated here).
MAX_BUFFERED_BYTES = 64 * 1024
P_DATA_TF = 0x04
PDU_TYPES = frozenset(range(0x01, 0x08))
_REFUSED = -1  # BoundedAssociationSocket._body_expected: the PDU's body is not to be read
#: Seconds between two "refused a connection" warnings about one host (floods log once).
REFUSAL_LOG_INTERVAL_S = 60.0


@dataclass(frozen=True)
class NetworkLimits:
    """What one peer may cost the node."""

    max_pdu_bytes: int = 65536  # our Maximum Length Received (P-DATA-TF variable field)
    pdu_timeout_s: float = 30.0  # one PDU, header to last byte; also each write
    handshake_timeout_s: float = 10.0  # TLS handshake
    max_associations: int = 16  # open connections, all peers together
    max_associations_per_peer: int = 4  # open connections from one host

    def __post_init__(self) -> None:
        if not 4096 <= self.max_pdu_bytes <= 16 * 1024 * 1024:
            raise ValueError(f"max_pdu_bytes {self.max_pdu_bytes} is outside 4096-16 MiB")
        if self.pdu_timeout_s <= 0 or self.handshake_timeout_s <= 0:
            raise ValueError("network timeouts must be positive")
        if not 1 <= self.max_associations_per_peer <= self.max_associations:
            raise ValueError("1 <= max_associations_per_peer <= max_associations")


class ObjectTooLargeError(Exception):
    """A C-STORE data set passed the object size limit while arriving (raised by the sink)."""


class ProtocolLimitError(Exception):
    """A peer broke a bound (a PDU, a command set, an object too large): the association
    is aborted. The message names the bound, never a value the peer sent."""


class ObjectSink(Protocol):
    """Where one C-STORE data set goes as it arrives (:class:`pacs.receiving.PartFile`).

    pynetdicom writes each fragment with ``write`` and calls ``file.flush()`` after it; it
    later ``close()``\\s the sink and unlinks ``name`` (both must tolerate having been done).
    """

    name: str

    @property
    def file(self) -> Any: ...

    def write(self, data: bytes) -> int: ...

    def close(self) -> None: ...

    def discard(self) -> None: ...


#: Opens the sink of a C-STORE-RQ whose data set starts now: (association, command set,
#: presentation context id) -> sink. Raises :class:`ProtocolLimitError` to refuse.
OpenSink = Callable[[Association, Any, int], ObjectSink]


class BoundedAssociationSocket(AssociationSocket):
    """pynetdicom's socket, reading each PDU against a deadline and a length limit.

    pynetdicom's DUL reads a PDU as ``recv(6)`` (type, reserved, length) then
    ``recv(length)``. Past the deadline or the length limit this returns short, which the
    DUL treats as the connection closing (Evt17): the association ends, nothing is kept.
    """

    limits: NetworkLimits
    _body_expected: int | None
    _deadline: float

    @classmethod
    def adopt(cls, sock: AssociationSocket, limits: NetworkLimits) -> BoundedAssociationSocket:
        """Bound the socket pynetdicom built for an accepted connection.

        pynetdicom constructs its ``AssociationSocket`` inside
        ``RequestHandler._create_association`` (constructing one queues the
        transport-connected event) and offers no factory for it, so the instance is
        re-classed rather than rebuilt: every other line of its set-up stays pynetdicom's.
        """
        sock.__class__ = cls
        bounded: BoundedAssociationSocket = sock  # type: ignore[assignment]
        bounded.limits = limits
        bounded._body_expected = None
        bounded._deadline = 0.0
        if bounded.socket is not None:
            bounded.socket.settimeout(limits.pdu_timeout_s)  # writes too: see send()
        return bounded

    def recv(self, nr_bytes: int) -> bytearray:
        expected, self._body_expected = self._body_expected, None
        if expected == _REFUSED:
            return bytearray()  # the body of a PDU over the limit: never read
        if expected is None or nr_bytes != expected:
            return self._recv_header(nr_bytes)
        return self._recv_until_deadline(nr_bytes)

    def _recv_header(self, nr_bytes: int) -> bytearray:
        self._deadline = time.monotonic() + self.limits.pdu_timeout_s
        data = self._recv_until_deadline(nr_bytes)
        self._body_expected = None
        if len(data) != 6:
            return data
        pdu_type, _, length = struct.unpack(">BBL", data)
        if pdu_type not in PDU_TYPES:
            return data  # pynetdicom refuses it (Evt19)
        limit = self.limits.max_pdu_bytes if pdu_type == P_DATA_TF else MAX_CONTROL_PDU_BYTES
        if length > limit:
            log.warning(
                "association from %s aborted: a PDU of %d bytes, over the %d byte limit",
                _peer(self),
                length,
                limit,
            )
            self._body_expected = _REFUSED  # the body read that follows gets nothing: Evt17
            return data
        self._body_expected = length
        return data

    def _recv_until_deadline(self, nr_bytes: int) -> bytearray:
        sock = self.socket
        received = bytearray()
        if sock is None or nr_bytes <= 0:
            return received
        while len(received) < nr_bytes:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                self._log_timeout(len(received), nr_bytes)
                return received
            try:
                sock.settimeout(remaining)
                chunk = sock.recv(min(nr_bytes - len(received), 65536))
            except TimeoutError:
                self._log_timeout(len(received), nr_bytes)
                return received
            except OSError:
                return received
            if not chunk:
                return received
            received += chunk
        sock.settimeout(self.limits.pdu_timeout_s)
        return received

    def _log_timeout(self, got: int, wanted: int) -> None:
        log.warning(
            "association from %s aborted: %d of %d bytes of a PDU in %.0f s (the PDU limit)",
            _peer(self),
            got,
            wanted,
            self.limits.pdu_timeout_s,
        )


def _peer(sock: AssociationSocket) -> str:
    try:
        return str(sock.assoc.requestor.address)
    except AttributeError:
        return "a peer"


class StreamingDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider, with every C-STORE data set streamed into a sink.

    P-DATA primitives are passed on to pynetdicom one presentation data value at a time,
    so that the sink is in place before the first data set fragment of a C-STORE-RQ is
    decoded, even when the command's last fragment and the data set's first share a PDU.
    """

    def __init__(self, assoc: Association, open_sink: OpenSink) -> None:
        super().__init__(assoc)
        self._open_sink = open_sink
        self._buffered = 0  # bytes of the current message held in memory by pynetdicom
        self._refused = False  # a bound was broken: the association is being aborted
        self.sinks: list[ObjectSink] = []  # every sink opened, for clean-up at the end

    def receive_primitive(self, primitive: P_DATA) -> None:
        """Pass ``primitive`` on, one value at a time; past a bound, abort the association
        as pynetdicom does for an invalid message (Evt19: A-ABORT to the peer) and drop
        whatever else it sends meanwhile."""
        if self._refused:
            return
        try:
            for context_id, data in primitive.presentation_data_value_list:
                self._receive_value(context_id, data)
        except (ProtocolLimitError, ObjectTooLargeError) as error:
            self._abort(str(error))
        except Exception as error:  # a message pynetdicom cannot decode  # noqa: BLE001
            # Raised here, it would end pynetdicom's DUL thread outside its own error
            # handling and leave the association hanging; the text may quote the message.
            self._abort(f"a message that cannot be decoded ({type(error).__name__})")

    def _abort(self, why: str) -> None:
        self._refused = True
        log.warning("association from %s aborted: %s", self.assoc.requestor.address, why)
        self.discard_unfinished()
        self.dul.event_queue.put("Evt19")

    def _receive_value(self, context_id: int, data: bytes) -> None:
        if not data:
            raise ProtocolLimitError("an empty presentation data value")
        message = self.message
        is_command = bool(data[0] & 1)
        streamed = (
            not is_command
            and isinstance(message, C_STORE_RQ)
            and message._data_set_file is not None
        )
        if (
            not is_command
            and not streamed
            and isinstance(message, C_STORE_RQ)
            and message.command_set is not None
        ):
            try:
                sink = self._open_sink(self.assoc, message.command_set, context_id)
            except ProtocolLimitError:
                raise
            except (OSError, ValueError, TypeError, AttributeError) as error:
                raise ProtocolLimitError(
                    f"the C-STORE's file could not be opened ({type(error).__name__})"
                ) from error
            self.sinks.append(sink)
            message._data_set_file = sink  # type: ignore[assignment]
            message._data_set_path = _path_of(sink)
            streamed = True
        if not streamed:
            self._buffered += len(data)
            if self._buffered > MAX_BUFFERED_BYTES:
                raise ProtocolLimitError(
                    f"a command set or a non-C-STORE data set over {MAX_BUFFERED_BYTES} bytes"
                )
        single = P_DATA()
        single.presentation_data_value_list = [[context_id, bytes(data)]]  # type: ignore[list-item]
        super().receive_primitive(single)
        if self.message is None:  # a whole message was decoded and queued
            self._buffered = 0

    def discard_unfinished(self) -> int:
        """Remove every sink's file that no handler took (an aborted or cut-off transfer,
        or a complete one the association ended before handling). Returns how many."""
        removed = 0
        for sink in self.sinks:
            sink.close()
            if _discard(sink):
                removed += 1
        self.sinks.clear()
        return removed


def _path_of(sink: ObjectSink) -> Path:
    return Path(sink.name)


def _discard(sink: ObjectSink) -> bool:
    existed = Path(sink.name).exists()
    sink.discard()
    return existed


class NodeRequestHandler(RequestHandler):
    """One accepted connection, in its own thread: TLS, the association, then clean-up."""

    server: NodeServer

    def handle(self) -> None:
        node = self.server
        if node.tls_context is not None and not self._tls_handshake(node.tls_context):
            return
        assoc = self._create_association()
        evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
        assoc.start()
        assoc.join()  # the connection's slot is held until the association has ended
        dimse = assoc.dimse
        if isinstance(dimse, StreamingDIMSE):
            removed = dimse.discard_unfinished()
            if removed:
                log.info(
                    "association from %s ended with %d object(s) unfinished; removed",
                    self.client_address[0],
                    removed,
                )

    def _tls_handshake(self, context: ssl.SSLContext) -> bool:
        raw = self.request
        try:
            raw.settimeout(self.server.limits.handshake_timeout_s)
            wrapped = context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
            wrapped.do_handshake()
        except (OSError, ValueError) as error:
            log.warning(
                "TLS handshake with %s failed: %s",
                self.client_address[0],
                getattr(error, "reason", None) or type(error).__name__,
            )
            _close(raw)
            return False
        self.request = wrapped
        return True

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        BoundedAssociationSocket.adopt(assoc.dul.socket, self.server.limits)  # type: ignore[arg-type]
        assoc.dimse = StreamingDIMSE(assoc, self.server.open_sink)
        return assoc


class NodeServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, deciding at accept who may take a connection slot."""

    request_queue_size = 128  # the kernel's backlog: a burst of connects is not dropped
    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        ae: Any,
        address: tuple[str, int],
        ae_title: str,
        contexts: list[Any],
        ssl_context: ssl.SSLContext | None = None,
        evt_handlers: list[Any] | None = None,
        *,
        peers: PeerTable,
        limits: NetworkLimits,
        open_sink: OpenSink,
        tls_context: ssl.SSLContext | None = None,
        **kwargs: Any,
    ) -> None:
        if ssl_context is not None:
            raise ValueError("pass tls_context: the handshake belongs in the connection thread")
        self.peers = peers
        self.limits = limits
        self.open_sink = open_sink
        self.tls_context = tls_context
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._last_refusal: dict[str, float] = {}
        super().__init__(
            ae,
            address,
            ae_title,
            contexts,
            None,
            evt_handlers=evt_handlers,
            request_handler=NodeRequestHandler,
            **kwargs,
        )

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Take a slot for the connection, or refuse it (the socket is closed at once)."""
        host = str(client_address[0])
        if not self.peers.host_is_known(host):
            self._refused(host, "not a known peer host (CXR_LISTEN_PEERS)")
            return False
        with self._lock:
            total = sum(self._open.values())
            if total >= self.limits.max_associations:
                reason = f"{total} connections open, the node's limit"
            elif self._open[host] >= self.limits.max_associations_per_peer:
                reason = f"{self._open[host]} connections open from it, the per-peer limit"
            else:
                self._open[host] += 1
                return True
        self._refused(host, reason)
        return False

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        host = str(client_address[0])
        try:
            self.finish_request(request, client_address)
        except Exception:
            log.exception("connection from %s ended by an error", host)
            self.shutdown_request(request)
        finally:
            with self._lock:
                self._open[host] -= 1
                if self._open[host] <= 0:
                    del self._open[host]

    def open_connections(self) -> dict[str, int]:
        with self._lock:
            return dict(self._open)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("error on a connection from %s", client_address[0])

    def _refused(self, host: str, reason: str) -> None:
        now = time.monotonic()
        if now - self._last_refusal.get(host, -REFUSAL_LOG_INTERVAL_S) >= REFUSAL_LOG_INTERVAL_S:
            self._last_refusal[host] = now
            # this machine (a health check's TCP probe) is not the network: no warning
            level = logging.INFO if _is_loopback(host) else logging.WARNING
            log.log(level, "refused a connection from %s: %s", host, reason)
        if len(self._last_refusal) > 10_000:
            self._last_refusal.clear()  # a sweep of addresses: forget, keep logging bounded

    def shutdown(self) -> None:
        """Stop accepting and close the listening socket (the server was made with
        ``make_server``, so it is not in the AE's own list of servers)."""
        socketserver.BaseServer.shutdown(self)
        self.server_close()


def _is_loopback(host: str) -> bool:
    address = parse_address(host)
    return address is not None and address.is_loopback


def _close(sock: Any) -> None:
    with contextlib.suppress(OSError):
        sock.close()
