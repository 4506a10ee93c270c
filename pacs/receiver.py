"""``cxr-triage listen`` (and ``run --listen``): a DICOM Storage SCP that puts radiographs
into the inbox.

What a PACS administrator registers: our AE title and port (``CXR_LISTEN_AE_TITLE``,
``CXR_LISTEN_PORT``), and on our side the peers that may send (``CXR_LISTEN_PEERS``). What
the node does, in the order a connection meets it (the full statement is
``docs/conformance-receiver.md``):

1. TCP accept: the host must be a known peer's, and under the per-peer and total connection
   limits; otherwise the connection is closed at once (:mod:`pacs.scp_transport`). With
   ``CXR_LISTEN_TLS_CERTIFICATE`` the connection is DICOM TLS (PS3.15 B.1), client
   certificates required when ``CXR_LISTEN_TLS_CA`` is set.
2. association: the called AE title must be ours and the calling AE title bound to the
   host it calls from (:mod:`pacs.peers`); otherwise A-ASSOCIATE-RJ.
3. negotiation: Verification (C-ECHO) and the two storage SOP Classes eligibility can score,
   CR Image Storage and Digital X-Ray Image Storage - For Presentation, each in every
   transfer syntax ingest decodes here (:func:`ingest.dicom.decodable_transfer_syntaxes`).
   Anything else is refused in its presentation context, before a byte of pixels.
4. each C-STORE data set is streamed to a private ``.part`` file as it arrives
   (:mod:`pacs.receiving`): memory stays flat, and an object over
   ``CXR_LISTEN_MAX_OBJECT_BYTES`` aborts the association when it passes the limit. Each
   PDU must arrive within ``CXR_LISTEN_PDU_TIMEOUT_S``; a silent association is aborted
   after ``CXR_LISTEN_IDLE_TIMEOUT_S``.
5. the complete object is checked as ingest will check it (:mod:`pacs.object_checks`):
   header, identity, eligibility, pixel limits. A refusal is answered with a failure status
   whose Error Comment names the reason (``0xC000`` ``not eligible: lateral_view``,
   ``not accepted: too_large``; ``0xA900`` for a data set whose UIDs are not the
   command's; ``0xA700`` when the disk cannot take it) and nothing is kept.
6. an accepted object is linked into the inbox as ``<SOP Instance UID>.dcm``, never over
   another file (a duplicate is dropped, a UID clash kept beside it for the intake to
   quarantine), synced, and only then answered Success. Inside ``cxr-triage run`` the
   finished path is also handed straight to the watcher (``on_received``): a file the
   receiver wrote is complete by construction and needs no quiet period.

The pixels are not decoded here: scoring is the worker's, and its outcome is on the worklist.
Nothing that identifies a patient is logged: objects are named by a hash prefix.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dsutils import create_file_meta
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from ingest.dicom import decodable_transfer_syntaxes
from ingest.image import ImageMetadata
from ingest.limits import MAX_PIXELS
from pacs.object_checks import (
    CANNOT_UNDERSTAND,
    CHECKS_AT_ONCE,
    DATA_SET_MISMATCH,
    OUT_OF_RESOURCES,
    SUCCESS,
    ReceivedObject,
    Refusal,
    check_object,
)
from pacs.peers import PeerTable, check_ae_title, parse_peers
from pacs.receiving import (
    Filing,
    PartFile,
    ReceivingArea,
    file_into_inbox,
    inbox_stem,
)
from pacs.scp_transport import NetworkLimits, NodeServer, ProtocolLimitError

log = logging.getLogger(__name__)

__all__ = [
    "ACCEPTED_STORAGE",
    "CANNOT_UNDERSTAND",
    "DATA_SET_MISMATCH",
    "OUT_OF_RESOURCES",
    "SUCCESS",
    "NetworkLimits",
    "Receiver",
    "ReceiverConfig",
    "TLSFiles",
]

CR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1")
DX_FOR_PRESENTATION = UID("1.2.840.10008.5.1.4.1.1.1.1")
ACCEPTED_STORAGE = (CR_IMAGE_STORAGE, DX_FOR_PRESENTATION)
ERROR_COMMENT_MAX = 64  # (0000,0902) Error Comment, VR LO
#: The largest object accepted by default: the largest image ingest accepts (MAX_PIXELS at
#: 16 bits, 200 MB) and room for its header. A chest radiograph is 5-80 MB uncompressed.
DEFAULT_MAX_OBJECT_BYTES = MAX_PIXELS * 2 + 56 * 1024 * 1024
#: Seconds between two warnings about the same refused (host, AE title).
REJECTION_LOG_INTERVAL_S = 60.0

#: Called with each accepted object's path in the inbox (``run`` hands it to its watcher).
OnReceived = Callable[[Path], None]


@dataclass(frozen=True)
class TLSFiles:
    """DICOM TLS: our certificate chain and key (PEM), and the CA that signs the peers'
    client certificates (None: peers are not asked for one)."""

    certificate: Path
    key: Path
    ca: Path | None = None

    def server_context(self) -> ssl.SSLContext:
        """TLS 1.2 or later with the library's secure defaults (BCP 195, as dcmtk's default
        profile); a client certificate from ``ca`` required when ``ca`` is set."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.certificate, self.key)
        if self.ca is not None:
            context.load_verify_locations(cafile=self.ca)
            context.verify_mode = ssl.CERT_REQUIRED
        return context


@dataclass(frozen=True)
class ReceiverConfig:
    """Where the node listens, who may call, and what one caller may cost it."""

    inbox: Path
    ae_title: str = "CXR_TRIAGE"
    port: int = 11112
    host: str = "0.0.0.0"
    peers: PeerTable = field(default_factory=lambda: parse_peers(""))
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES
    limits: NetworkLimits = field(default_factory=NetworkLimits)
    acse_timeout_s: float = 15.0  # connect -> A-ASSOCIATE-RQ, and release/abort replies
    idle_timeout_s: float = 60.0  # no PDU for this long: the association is aborted
    file_mode: int = 0o640  # received files (from the umask setting)
    tls: TLSFiles | None = None

    def __post_init__(self) -> None:
        check_ae_title(self.ae_title)
        if not 0 <= self.port < 65536:
            raise ValueError(f"port {self.port} is out of range")
        if self.max_object_bytes <= 0:
            raise ValueError("max_object_bytes must be positive")
        if self.acse_timeout_s <= 0 or self.idle_timeout_s <= 0:
            raise ValueError("receiver timeouts must be positive")
        if self.file_mode & ~0o777:
            raise ValueError(f"file_mode {self.file_mode:o} is not a permission mode")


def build_ae(config: ReceiverConfig) -> AE:
    """The application entity with the contexts, AE-title rules and timeouts of the node."""
    ae = AE(ae_title=config.ae_title)
    ae.require_called_aet = True
    ae.acse_timeout = config.acse_timeout_s
    ae.network_timeout = config.idle_timeout_s
    ae.dimse_timeout = config.idle_timeout_s
    ae.maximum_pdu_size = config.limits.max_pdu_bytes
    ae.maximum_associations = config.limits.max_associations
    syntaxes = list(decodable_transfer_syntaxes())
    ae.add_supported_context(Verification)
    for sop_class in ACCEPTED_STORAGE:
        ae.add_supported_context(sop_class, syntaxes)
    return ae


@dataclass
class _InTransit:
    part: PartFile
    transfer_syntax: UID


class Receiver:
    """The running SCP: :meth:`start` listens in background threads, :meth:`stop` ends it."""

    def __init__(self, config: ReceiverConfig, on_received: OnReceived | None = None) -> None:
        self.config = config
        self.on_received = on_received
        self._ae: AE | None = None
        self._server: NodeServer | None = None
        self._area: ReceivingArea | None = None
        self._in_transit: dict[str, _InTransit] = {}
        self._lock = threading.Lock()
        self._checks = threading.BoundedSemaphore(CHECKS_AT_ONCE)
        self._last_rejection: dict[tuple[str, str], float] = {}

    @property
    def port(self) -> int:
        """The port listened on (the configured one, or the one the system chose for 0)."""
        if self._server is None:
            return self.config.port
        return int(self._server.server_address[1])

    @property
    def server(self) -> NodeServer | None:
        return self._server

    def start(self) -> None:
        config = self.config
        config.inbox.mkdir(parents=True, exist_ok=True)
        self._area = ReceivingArea(config.inbox)
        self._area.open()
        self._ae = build_ae(config)
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_C_STORE, self.on_store),
        ]
        server = self._ae.make_server(
            (config.host, config.port),
            evt_handlers=handlers,
            server_class=NodeServer,
            peers=config.peers,
            limits=config.limits,
            open_sink=self._open_sink,
            tls_context=config.tls.server_context() if config.tls else None,
        )
        assert isinstance(server, NodeServer)
        self._server = server
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="dicom-node"
        ).start()
        if config.peers.allow_any:
            log.warning(
                "DICOM node accepts ANY host under ANY AE title (CXR_LISTEN_ALLOW_ANY_PEER): "
                "anyone who can reach port %d can add cases to the reading order",
                self.port,
            )
        log.info(
            "DICOM node %s listening on %s:%d%s; peers: %s",
            config.ae_title,
            config.host,
            self.port,
            " (TLS)" if config.tls else "",
            config.peers.describe(),
        )

    def stop(self) -> None:
        """Stop accepting, abort associations in progress (nothing of theirs was
        acknowledged), and remove this receiver's partial files."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._ae is not None:
            for assoc in self._ae.active_associations:
                assoc.abort()
            self._ae = None
        if self._area is not None:
            self._area.close()
            self._area = None

    def serve(self, stop: threading.Event) -> None:
        """Listen until ``stop`` is set (the ``listen`` command)."""
        self.start()
        try:
            stop.wait()
        finally:
            self.stop()

    # -- association
    def on_requested(self, event: Event) -> None:
        """A-ASSOCIATE-RQ: the calling AE title must be bound to the host it calls from."""
        assoc = event.assoc
        calling = str(getattr(assoc.requestor.primitive, "calling_ae_title", "") or "").strip()
        host = str(assoc.requestor.address)
        if self.config.peers.admits(calling, host):
            return
        self._log_rejection(host, calling)
        assoc.acse.send_reject(0x01, 0x01, 0x03)  # permanent, service user, calling AE title
        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()

    def _log_rejection(self, host: str, calling: str) -> None:
        key = (host, calling[:16])
        now = time.monotonic()
        if now - self._last_rejection.get(key, -REJECTION_LOG_INTERVAL_S) >= (
            REJECTION_LOG_INTERVAL_S
        ):
            self._last_rejection[key] = now
            log.warning(
                "rejected an association from %s: calling AE title %r is not bound to that "
                "host (CXR_LISTEN_PEERS)",
                host,
                calling[:16],
            )
        if len(self._last_rejection) > 10_000:
            self._last_rejection.clear()

    # -- C-STORE
    def _open_sink(self, assoc: Association, command: Dataset, context_id: int) -> PartFile:
        """The file a C-STORE's data set streams into, with the file meta the association
        agreed (PS3.10 7.1: preamble, ``DICM``, group 0002)."""
        area = self._area
        if area is None:
            raise ProtocolLimitError("the receiver is stopping")
        context = next((c for c in assoc.accepted_contexts if c.context_id == context_id), None)
        if context is None or not context.transfer_syntax:
            raise ProtocolLimitError("a data set on a presentation context not accepted")
        syntax = UID(context.transfer_syntax[0])
        meta = create_file_meta(
            sop_class_uid=UID(str(command.AffectedSOPClassUID or "")),
            sop_instance_uid=UID(str(command.AffectedSOPInstanceUID or "")),
            transfer_syntax=syntax,
        )
        meta.SourceApplicationEntityTitle = assoc.requestor.ae_title
        part = PartFile(area.new_part(), meta, self.config.max_object_bytes)
        with self._lock:
            self._in_transit[part.name] = _InTransit(part, syntax)
        return part

    def on_store(self, event: Event) -> int | Dataset:
        """One complete C-STORE: check as ingest will, file into the inbox or refuse."""
        caller = event.assoc.requestor.ae_title
        try:
            path = str(event.dataset_path)
        except AttributeError:
            path = ""
        with self._lock:
            transit = self._in_transit.pop(path, None)
        if transit is None:
            return failure(CANNOT_UNDERSTAND, "no data set received")
        part = transit.part
        try:
            sha256 = part.finish(self.config.file_mode)
        except OSError as error:
            part.discard()
            log.error("cannot write an object into the inbox: %s", error.strerror or error)
            return failure(OUT_OF_RESOURCES, "cannot write into the inbox")
        digest = sha256[:12]
        area = self._area
        if area is None:
            part.discard()
            return failure(OUT_OF_RESOURCES, "the receiver is stopping")
        request: Any = event.request  # a C-STORE primitive
        received = ReceivedObject(
            path=part.path,
            dataset_offset=part.dataset_offset,
            transfer_syntax=transit.transfer_syntax,
            sha256=sha256,
            affected_sop_class_uid=str(request.AffectedSOPClassUID or ""),
            affected_sop_instance_uid=str(request.AffectedSOPInstanceUID or ""),
            work_folder=area.folder,
        )
        try:
            with self._checks:
                verdict = check_object(received)
        except OSError as error:
            part.discard()
            log.error("cannot read back object %s: %s", digest, error.strerror or error)
            return failure(OUT_OF_RESOURCES, "cannot read back the object")
        if isinstance(verdict, Refusal):
            part.discard()
            log.info("refused object %s from %s: %s", digest, caller, verdict.comment)
            return failure(verdict.status, verdict.comment)
        return self._file(part, verdict, sha256, caller)

    def _file(
        self, part: PartFile, metadata: ImageMetadata, sha256: str, caller: str
    ) -> int | Dataset:
        digest = sha256[:12]
        stem = inbox_stem(metadata.sop_instance_uid or "", sha256)
        try:
            filed = file_into_inbox(part.path, self.config.inbox, stem, sha256)
        except OSError as error:
            part.discard()
            log.error("cannot file object %s into the inbox: %s", digest, error.strerror)
            return failure(OUT_OF_RESOURCES, "cannot write into the inbox")
        if filed.outcome is Filing.DUPLICATE:
            log.info("received object %s from %s: already in the inbox", digest, caller)
            return SUCCESS
        if filed.outcome is Filing.UID_CLASH:
            log.warning(
                "received object %s from %s: another object with the same SOP Instance UID "
                "and other bytes is in the inbox; both kept (the intake quarantines the "
                "second as a duplicate)",
                digest,
                caller,
            )
        else:
            log.info("received object %s from %s", digest, caller)
        if self.on_received is not None:
            try:
                self.on_received(filed.path)
            except Exception:  # the file is in the inbox: the watcher's rescan finds it
                log.exception("handing object %s to the intake failed; the watcher will", digest)
        return SUCCESS


def failure(status: int, comment: str) -> Dataset:
    """A C-STORE response status with an Error Comment (no patient data, at most 64 chars)."""
    response = Dataset()
    response.Status = status
    response.ErrorComment = comment[:ERROR_COMMENT_MAX]
    return response
