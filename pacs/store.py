"""C-STORE the results to the configured PACS (pynetdicom SCU), with timeouts and clear errors.

One association per call (:func:`store_batch`: the delivery loop's batch). Each file is read
and checked before anything is sent (:func:`read_outgoing`): a zero-byte, truncated or
foreign file in the outbox is reported :class:`Unreadable` on its own and never costs its
batch-mates their delivery. Presentation contexts, per SOP Class sent: an uncompressed
object offers Explicit and Implicit VR Little Endian; a compressed one (the SC: JPEG
Baseline) offers its own syntax in one context and Explicit/Implicit VR Little Endian in
another, and is decompressed for a PACS that accepts only the latter (PS3.5 A: every
Storage SCP supports Implicit VR Little Endian).

What the PACS answers is classified by :mod:`pacs.statuses`: a failure status is
*temporary* or *permanent* (:class:`Refused`); an association rejection raises a
:class:`StoreError` that says which. Warning statuses (PS3.4 B.2.3: coercion, elements
discarded) count as stored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import TypeVar

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.events import EventHandlerType
from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_RJ
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from pacs.statuses import Outcome, Verdict, classify_rejection, classify_status

log = logging.getLogger(__name__)
T = TypeVar("T")

AE_TITLE_MAX_LENGTH = 16  # PS3.5 VR AE
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
SOP_CLASS_NOT_SUPPORTED = 0x0122  # PS3.7 C.4: Refused, SOP Class not supported
#: Decoders that turn a compressed result back into native pixels for a PACS that refuses
#: its syntax (pydicom's pixel plugin names); Pillow is libjpeg-turbo.
DECODING_PLUGINS = {JPEGBaseline8Bit: "pillow"}


class StorePriority(IntEnum):
    """PS3.7 9.1.1.1: the C-STORE request's Priority."""

    MEDIUM = 0
    HIGH = 1
    LOW = 2


class StoreError(RuntimeError):
    """No association: the PACS unreachable, or it rejected us. The message says where and
    why (no patient data); ``permanent`` when sending again cannot help until a person
    changes a configuration (an AE title the PACS does not know)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class PacsNode:
    """Where the results go: the PACS's Storage SCP and our own AE title."""

    host: str
    port: int
    called_ae_title: str
    calling_ae_title: str = "CXR_TRIAGE"
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("called_ae_title", "calling_ae_title"):
            title = getattr(self, name)
            if not title.strip() or len(title) > AE_TITLE_MAX_LENGTH or "\\" in title:
                raise ValueError(f"{name} {title!r} is not a valid AE title (1-16 characters)")
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} is out of range")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")

    def __str__(self) -> str:
        return f"{self.called_ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class Outgoing:
    """One object to send: its file, the request's priority, and the SOP Instance UID its
    tracking row says the file holds (checked before sending; ``None``: not checked)."""

    path: Path
    priority: StorePriority = StorePriority.MEDIUM
    sop_instance_uid: str | None = None


@dataclass(frozen=True)
class Stored:
    path: Path
    sop_instance_uid: str
    status: int  # 0x0000 success, or a warning status
    uncompressed: bool = False  # sent decompressed: the PACS refused its own syntax


@dataclass(frozen=True)
class Refused:
    """An object the PACS did not store: its answer (or none), and what that means."""

    path: Path
    status: int | None  # None: no response (DIMSE timeout or abort), or no context at all
    verdict: Verdict

    @property
    def permanent(self) -> bool:
        return self.verdict.permanent

    def __str__(self) -> str:
        return f"refused {self.path.name}: {self.verdict.words}"


@dataclass(frozen=True)
class Unreadable:
    """A file that is not a sendable result (empty, truncated, not DICOM, not its row's
    object): reported before the association, never sent."""

    path: Path
    why: str

    def __str__(self) -> str:
        return f"{self.path.name} cannot be sent: {self.why}"


@dataclass
class BatchResult:
    """What one association did: stored, refused, not tried (after a lost association),
    and the files that could not be read."""

    stored: list[Stored] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    unsent: list[Path] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)


class UnreadableResultError(ValueError):
    """Raised by :func:`read_outgoing`; the message has no patient data."""


def read_outgoing(item: Outgoing) -> Dataset:
    """Read and check one result file before it is sent.

    Whatever a broken file holds, this raises :class:`UnreadableResultError` (or
    :class:`FileNotFoundError` when it is gone), never another error: the SOP Class,
    Instance and transfer syntax must be there, the instance must be the one its row tracks,
    and the pixels of an image must decode to their stated size (a truncated SC fails here,
    not halfway through a C-STORE).
    """
    path = item.path
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise
    except OSError as error:
        raise UnreadableResultError(f"cannot be read ({error.strerror})") from error
    if size == 0:
        raise UnreadableResultError("the file is empty (0 bytes)")
    try:
        dataset = pydicom.dcmread(path)
        sop_class = str(dataset.SOPClassUID)
        sop_instance = str(dataset.SOPInstanceUID)
        str(dataset.file_meta.TransferSyntaxUID)
        if "PixelData" in dataset:
            _check_pixels(dataset)
    except UnreadableResultError:
        raise
    except Exception as error:  # whatever pydicom or a decoder raises for a broken file
        raise UnreadableResultError(
            f"not a readable DICOM result of {size} bytes ({type(error).__name__}); it may "
            "be truncated"
        ) from error
    if not sop_class or not sop_instance:
        raise UnreadableResultError("it has no SOP Class or SOP Instance UID")
    if item.sop_instance_uid is not None and sop_instance != item.sop_instance_uid:
        raise UnreadableResultError(
            "it holds another SOP Instance than its tracking row: the file was replaced"
        )
    return dataset


def read_each(
    items: Sequence[Outgoing],
    read: Callable[[Outgoing], T],
    result: BatchResult,
    refusals: tuple[type[Exception], ...] = (),
) -> list[tuple[Outgoing, T]]:
    """``(item, what read(item) gave)`` for each item that can be sent; the others go to
    ``result.unreadable`` with why, and are never sent. What every destination (the PACS,
    the RIS by MLLP or FHIR) says of a file gone from the outbox, one it cannot read, and one
    its ``read`` refuses (:class:`UnreadableResultError` or one of ``refusals``)."""
    refused: tuple[type[Exception], ...] = (UnreadableResultError, *refusals)
    ready: list[tuple[Outgoing, T]] = []
    for item in items:
        try:
            ready.append((item, read(item)))
        except FileNotFoundError:
            result.unreadable.append(Unreadable(item.path, "the file is no longer in the outbox"))
        except OSError as error:
            result.unreadable.append(Unreadable(item.path, f"cannot be read ({error.strerror})"))
        except refused as error:
            result.unreadable.append(Unreadable(item.path, str(error)))
    return ready


def _check_pixels(dataset: Dataset) -> None:
    """The pixels decode to Rows x Columns x Samples (what the outbox checked on writing)."""
    syntax = dataset.file_meta.TransferSyntaxUID
    plugin = DECODING_PLUGINS.get(syntax, "")
    pixels = dataset.pixel_array if not plugin else _decoded(dataset, plugin)
    expected = int(dataset.Rows) * int(dataset.Columns) * int(dataset.SamplesPerPixel)
    if pixels.size != expected:
        raise UnreadableResultError("its Pixel Data does not hold the image it describes")


def _decoded(dataset: Dataset, plugin: str):  # type: ignore[no-untyped-def]
    from pydicom.pixels import pixel_array

    return pixel_array(dataset, decoding_plugin=plugin)


def store_batch(items: Sequence[Outgoing], node: PacsNode) -> BatchResult:
    """C-STORE each item over one association, carrying on past a refusal.

    Files that cannot be read come back ``unreadable`` and are never sent. Raises
    :class:`StoreError` when no association is made (PACS down, AE titles rejected; its
    ``permanent`` says whether a retry can help); an object without a response ends the
    association, and the rest come back ``unsent``.
    """
    result = BatchResult()
    datasets = read_each(items, read_outgoing, result)
    if not datasets:
        return result
    association, heard = _associate(node, [_context(dataset) for _, dataset in datasets])
    try:
        for message_id, (item, dataset) in enumerate(datasets, start=1):
            if not association.is_established:
                result.unsent.append(item.path)
                continue
            _store_one(association, node, item, dataset, message_id, result, heard)
    finally:
        if association.is_established:
            association.release()
    log.info("stored %d result object(s) on %s", len(result.stored), node)
    return result


def _store_one(
    association: Association,
    node: PacsNode,
    item: Outgoing,
    dataset: Dataset,
    message_id: int,
    result: BatchResult,
    heard: _Heard,
) -> None:
    sop_class, syntax = _context(dataset)
    accepted = _accepted_syntaxes(association, sop_class)
    native = any(s in UNCOMPRESSED for s in accepted)
    uncompressed = False
    if syntax in accepted or (syntax in UNCOMPRESSED and native):
        pass  # pynetdicom converts between the uncompressed syntaxes
    elif syntax not in UNCOMPRESSED and native:
        dataset = _decompressed(dataset)
        uncompressed = True
    else:
        offered = "Explicit and Implicit VR Little Endian"
        if syntax not in UNCOMPRESSED:
            offered = f"{_syntax_name(syntax)}, {offered}"
        words = (
            f"the PACS accepted no presentation context for SOP Class {sop_class} "
            f"(offered {offered})"
        )
        result.refused.append(
            Refused(item.path, SOP_CLASS_NOT_SUPPORTED, Verdict(Outcome.PERMANENT, words))
        )
        return
    try:
        status = association.send_c_store(dataset, msg_id=message_id, priority=item.priority)
    except Exception as error:  # noqa: BLE001  a dataset pynetdicom cannot encode: this one only
        words = f"could not be encoded for sending ({type(error).__name__})"
        result.refused.append(Refused(item.path, None, Verdict(Outcome.PERMANENT, words)))
        return
    code = int(status.Status) if "Status" in status else None
    verdict = classify_status(code)
    if code is None and heard.aborted_by_peer:
        verdict = Verdict(
            Outcome.TEMPORARY,
            "the PACS aborted the association instead of answering the C-STORE: it may not "
            f"let AE title {node.calling_ae_title} store from this host (Orthanc: "
            "DicomModalities), or it failed; retried",
        )
    if verdict.outcome is not Outcome.STORED:
        result.refused.append(Refused(item.path, code, verdict))
        if code is None and association.is_established:
            association.abort()
        return
    if code:
        log.warning("%s stored %s with %s", node, item.path.name, verdict.words)
    if uncompressed:
        log.info("%s refused %s: %s sent uncompressed", node, _syntax_name(syntax), item.path.name)
    result.stored.append(Stored(item.path, str(dataset.SOPInstanceUID), code or 0, uncompressed))


def send(
    paths: Sequence[Path], node: PacsNode, priority: StorePriority = StorePriority.MEDIUM
) -> list[Stored]:
    """C-STORE every file in ``paths`` to ``node`` over one association.

    Raises :class:`StoreError` if the association cannot be made or any store fails;
    files stored before the failure stay stored.
    """
    result = store_batch([Outgoing(path, priority) for path in paths], node)
    if result.unreadable:
        raise StoreError(f"{node}: {result.unreadable[0]}", permanent=True)
    if result.refused:
        raise StoreError(f"{node} {result.refused[0]}", permanent=result.refused[0].permanent)
    return result.stored


@dataclass(frozen=True)
class EchoReport:
    """What ``pacs-echo`` found: the C-ECHO status and round trip, and for each SOP Class
    the results use, the transfer syntaxes the PACS accepted (empty: refused)."""

    node: PacsNode
    status: int | None
    seconds: float
    accepted: dict[str, list[str]]

    @property
    def ok(self) -> bool:
        return self.status == 0x0000 and all(self.accepted.values())


def echo(node: PacsNode, sent_as: Sequence[tuple[str, str]]) -> EchoReport:
    """C-ECHO ``node`` over an association that also proposes the storage contexts the
    deliverer proposes for objects written as ``sent_as`` (SOP Class, transfer syntax), so
    one command tells an administrator whether the PACS is up, knows us, and will take the
    SR and the SC. Raises :class:`StoreError` as :func:`store_batch` does."""
    started = time.monotonic()
    sop_classes = list(dict.fromkeys(sop_class for sop_class, _ in sent_as))
    contexts = [(str(Verification), ImplicitVRLittleEndian), *sent_as]
    association, _ = _associate(node, contexts)
    try:
        response = association.send_c_echo()
        status = int(response.Status) if "Status" in response else None
        accepted = {
            sop_class: sorted(_syntax_name(s) for s in _accepted_syntaxes(association, sop_class))
            for sop_class in sop_classes
        }
    finally:
        if association.is_established:
            association.release()
    return EchoReport(node, status, time.monotonic() - started, accepted)


def _associate(
    node: PacsNode, contexts: Sequence[tuple[str, str]], *, also: Sequence[EventHandlerType] = ()
) -> tuple[Association, _Heard]:
    """An association proposing, per ``(SOP Class, transfer syntax)``: an uncompressed
    syntax with both uncompressed ones in one context, a compressed syntax alone in its own
    context plus an uncompressed context beside it (so the PACS cannot pick a syntax the
    object cannot be sent in, and one that refuses the compressed syntax still gets it).
    ``also``: more event handlers (a test slows the requesting thread with one)."""
    requested: dict[tuple[str, tuple[str, ...]], None] = {}
    for sop_class, syntax in sorted(set(contexts)):
        if syntax in UNCOMPRESSED:
            requested[(sop_class, tuple(dict.fromkeys([syntax, *UNCOMPRESSED])))] = None
        else:
            requested[(sop_class, (syntax,))] = None
            requested[(sop_class, UNCOMPRESSED)] = None
    return open_association(node, list(requested), also=also)


def open_association(
    node: PacsNode,
    requested: Sequence[tuple[str, Sequence[str]]],
    *,
    also: Sequence[EventHandlerType] = (),
) -> tuple[Association, _Heard]:
    """An established association with ``node`` proposing ``requested`` (abstract syntax,
    transfer syntaxes), every timer at the node's timeout. Raises :class:`StoreError` with
    the PACS's own reason when it rejects the association (permanent or not, as
    :func:`~pacs.statuses.classify_rejection` reads it), or says it could not be reached."""
    ae = AE(ae_title=node.calling_ae_title)
    ae.connection_timeout = node.timeout_s
    ae.acse_timeout = node.timeout_s
    ae.dimse_timeout = node.timeout_s
    ae.network_timeout = node.timeout_s
    for abstract_syntax, syntaxes in requested:
        ae.add_requested_context(abstract_syntax, list(syntaxes))
    heard = _Heard()

    def on_pdu(event: evt.Event) -> None:
        # Heard here, on the network thread, as the PDU is decoded: when the PACS answers
        # before the requesting thread gets to read the answer (a loaded machine),
        # pynetdicom closes the socket, then takes the association for aborted, never
        # rejected; the PDU itself still says what the PACS answered.
        pdu = event.pdu
        if isinstance(pdu, A_ABORT_RQ):
            heard.aborted_by_peer = True
        elif isinstance(pdu, A_ASSOCIATE_RJ):
            heard.rejection = (pdu.result or 0, pdu.source or 0, pdu.reason_diagnostic or 0)

    association = ae.associate(
        node.host,
        node.port,
        ae_title=node.called_ae_title,
        evt_handlers=[(evt.EVT_PDU_RECV, on_pdu), *also],
    )
    if not association.is_established:
        if heard.rejection is not None:
            verdict = classify_rejection(*heard.rejection)
            raise StoreError(f"{node} {verdict.words}", permanent=verdict.permanent)
        if association.is_rejected:
            raise StoreError(f"{node} rejected the association (check both AE titles)")
        raise StoreError(
            f"{node} could not be reached or aborted the association within "
            f"{node.timeout_s:g} s (check host, port and that the PACS is up)"
        )
    return association, heard


@dataclass
class _Heard:
    """What the PACS said at the association level: its A-ASSOCIATE-RJ (result, source,
    reason), and whether it aborted the association itself (an A-ABORT from the peer)."""

    rejection: tuple[int, int, int] | None = None
    aborted_by_peer: bool = False


def _accepted_syntaxes(association: Association, sop_class: str) -> list[str]:
    return [
        str(context.transfer_syntax[0])
        for context in association.accepted_contexts
        if context.abstract_syntax == sop_class and context.transfer_syntax
    ]


def _decompressed(dataset: Dataset) -> Dataset:
    """``dataset`` (read for this send alone) made native, Explicit VR Little Endian, same
    SOP Instance: pydicom decodes it (YBR to RGB) and rewrites Pixel Data; Lossy Image
    Compression stays 01, since the pixels did go through a lossy step."""
    plugin = DECODING_PLUGINS.get(dataset.file_meta.TransferSyntaxUID, "")
    dataset.decompress(decoding_plugin=plugin, generate_instance_uid=False)
    return dataset


def _context(dataset: Dataset) -> tuple[str, str]:
    return str(dataset.SOPClassUID), str(dataset.file_meta.TransferSyntaxUID)


def _syntax_name(syntax: str) -> str:
    return UID(syntax).name or syntax
