"""``cxr-triage listen``: a DICOM Storage SCP that puts radiographs into the inbox.

What a PACS administrator registers: our AE title and port (``CXR_LISTEN_AE_TITLE``,
``CXR_LISTEN_PORT``). What the node does, in the order an association meets it:

1. association: the called AE title must be ours; with an allow-list
   (``CXR_LISTEN_ALLOWED_AE_TITLES``) the calling AE title must be on it; otherwise the
   association is rejected (PS3.8 A-ASSOCIATE-RJ, "called/calling AE title not recognized");
2. negotiation: Verification (C-ECHO) and the two storage SOP Classes eligibility can score,
   CR Image Storage and Digital X-Ray Image Storage - For Presentation, each in every
   transfer syntax ingest decodes here (:func:`ingest.dicom.decodable_transfer_syntaxes`).
   Any other SOP Class (DX for processing, CT, SC, SR...) or syntax is refused in its
   presentation context: the sender learns it before sending a byte of pixels;
3. each C-STORE is written to a dot-named ``.part`` file in the inbox (which the watcher
   ignores), then checked as ingest will check it (:func:`ingest.read_header` and
   :func:`ingest.eligibility.evaluate`, header only). A file ingest would refuse is deleted
   and answered with a failure status whose Error Comment names the reason (``0xC000``
   cannot understand, e.g. ``lateral_view``); a file ingest accepts is renamed into place
   (``<SOP Instance UID>.dcm``, atomic on one file system) and answered Success. An object
   over the size limit, or a disk that is full, is answered ``0xA700`` (out of resources).

The pixels are not decoded here: scoring is the worker's, and its outcome is on the worklist.
Nothing that identifies a patient is logged: objects are named by a hash prefix.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID
from pynetdicom import AE, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from ingest.dicom import decodable_transfer_syntaxes
from ingest.eligibility import evaluate
from ingest.errors import IngestError
from ingest.limits import MAX_FILE_BYTES
from ingest.readers import read_header

log = logging.getLogger(__name__)

CR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1")
DX_FOR_PRESENTATION = UID("1.2.840.10008.5.1.4.1.1.1.1")
ACCEPTED_STORAGE = (CR_IMAGE_STORAGE, DX_FOR_PRESENTATION)
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # PS3.4 B.2.3 Refused: Out of Resources
CANNOT_UNDERSTAND = 0xC000  # PS3.4 B.2.3 Error: Cannot Understand
ERROR_COMMENT_MAX = 64  # (0000,0902) Error Comment, VR LO
AE_TITLE_MAX_LENGTH = 16


@dataclass(frozen=True)
class ReceiverConfig:
    """Where the node listens and what it admits."""

    inbox: Path
    ae_title: str = "CXR_TRIAGE"
    port: int = 11112
    host: str = "0.0.0.0"
    allowed_callers: frozenset[str] = field(default_factory=frozenset)  # empty: any
    max_object_bytes: int = MAX_FILE_BYTES
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        for title in (self.ae_title, *self.allowed_callers):
            if not title.strip() or len(title) > AE_TITLE_MAX_LENGTH or "\\" in title:
                raise ValueError(f"{title!r} is not a valid AE title (1-16 characters)")
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} is out of range")


def parse_allowed_callers(value: str) -> frozenset[str]:
    """``"MODALITY1, PACS"`` -> the allow-list; empty or blank: anyone may call."""
    return frozenset(title.strip() for title in value.split(",") if title.strip())


def build_ae(config: ReceiverConfig) -> AE:
    """The application entity with the contexts, AE-title rules and timeouts of the node."""
    ae = AE(ae_title=config.ae_title)
    ae.require_called_aet = True
    if config.allowed_callers:
        ae.require_calling_aet = sorted(config.allowed_callers)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = config.timeout_s
    syntaxes = list(decodable_transfer_syntaxes())
    ae.add_supported_context(Verification)
    for sop_class in ACCEPTED_STORAGE:
        ae.add_supported_context(sop_class, syntaxes)
    return ae


class Receiver:
    """The running SCP: :meth:`start` listens in background threads, :meth:`stop` ends it."""

    def __init__(self, config: ReceiverConfig) -> None:
        self.config = config
        self._server: object | None = None

    def start(self) -> None:
        self.config.inbox.mkdir(parents=True, exist_ok=True)
        ae = build_ae(self.config)
        handlers: list[Any] = [(evt.EVT_C_STORE, self.on_store)]
        self._server = ae.start_server(
            (self.config.host, self.config.port), block=False, evt_handlers=handlers
        )
        log.info(
            "DICOM node %s listening on %s:%d",
            self.config.ae_title,
            self.config.host,
            self.config.port,
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()  # type: ignore[attr-defined]
            self._server = None

    def serve(self, stop: threading.Event) -> None:
        """Listen until ``stop`` is set (the ``listen`` command)."""
        self.start()
        try:
            stop.wait()
        finally:
            self.stop()

    def on_store(self, event: Event) -> int | Dataset:
        """One C-STORE: write, check as ingest will, rename into the inbox or refuse."""
        raw = event.request.DataSet.getvalue()  # type: ignore[union-attr]
        caller = event.assoc.requestor.ae_title
        digest = hashlib.sha256(raw).hexdigest()[:12]
        if len(raw) > self.config.max_object_bytes:
            log.warning(
                "refused object %s from %s: %d bytes over the limit", digest, caller, len(raw)
            )
            return failure(OUT_OF_RESOURCES, "object larger than the receiver accepts")
        final = self.config.inbox / f"{_file_stem(event)}.dcm"
        partial = self.config.inbox / f".{final.stem}.{uuid.uuid4().hex[:8]}.part"
        try:
            _write(partial, event, raw)
        except OSError as error:
            partial.unlink(missing_ok=True)
            log.error("cannot write object %s into the inbox: %s", digest, error.strerror)
            return failure(OUT_OF_RESOURCES, "cannot write into the inbox")
        refusal = _refusal(partial)
        if refusal is not None:
            partial.unlink(missing_ok=True)
            log.info("refused object %s from %s: %s", digest, caller, refusal)
            return failure(CANNOT_UNDERSTAND, refusal)
        partial.replace(final)
        log.info("received object %s from %s", digest, caller)
        return SUCCESS


def failure(status: int, comment: str) -> Dataset:
    """A C-STORE response status with an Error Comment (no patient data, at most 64 chars)."""
    response = Dataset()
    response.Status = status
    response.ErrorComment = comment[:ERROR_COMMENT_MAX]
    return response


def _file_stem(event: Event) -> str:
    """The SOP Instance UID when it is a valid one (as dcmtk's storescp names files), else a
    random name: the inbox never gets a name chosen by the sender's free text."""
    uid = str(event.request.AffectedSOPInstanceUID or "")  # type: ignore[union-attr]
    return uid if UID(uid).is_valid else f"cxr-{uuid.uuid4().hex}"


def _write(path: Path, event: Event, raw: bytes) -> None:
    """Part 10: preamble, ``DICM``, the file meta the association agreed, the dataset as
    received (never re-encoded, so compressed pixels stay as the modality made them)."""
    with path.open("xb") as stream:
        stream.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(stream, event.file_meta, enforce_standard=True)  # type: ignore[arg-type]
        stream.write(raw)
        stream.flush()
        os.fsync(stream.fileno())


def _refusal(path: Path) -> str | None:
    """Why ingest would refuse ``path`` from its header (a reason code), or ``None``."""
    try:
        verdict = evaluate(read_header(path))
    except IngestError as error:
        return f"not accepted: {error.reason.value}"
    if verdict.eligible:
        return None
    reasons = dict.fromkeys(reason.value for reason in verdict.reasons)
    return "not eligible: " + ",".join(reasons)
