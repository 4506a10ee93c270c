"""C-STORE the results to the configured PACS (pynetdicom SCU), with timeouts and clear errors.

One association per call (:func:`store_batch`: the delivery loop's batch), one presentation
context per SOP Class sent (the file's own
transfer syntax, plus Explicit and Implicit VR Little Endian so any Storage SCP accepts
it). A refused or unreachable PACS and a failed store are :class:`StoreError`; warning
statuses (PS3.4 B.2.3: coercion, elements discarded) count as stored.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association

log = logging.getLogger(__name__)

AE_TITLE_MAX_LENGTH = 16  # PS3.5 VR AE
WARNING_STATUSES = frozenset({0x0001, 0xB000, 0xB006, 0xB007})
SOP_CLASS_NOT_SUPPORTED = 0x0122  # PS3.7 C.4: Refused, SOP Class not supported


class StorePriority(IntEnum):
    """PS3.7 9.1.1.1: the C-STORE request's Priority."""

    MEDIUM = 0
    HIGH = 1
    LOW = 2


class StoreError(RuntimeError):
    """The PACS did not take the results; the message says where and why (no patient data)."""


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
class Stored:
    path: Path
    sop_instance_uid: str
    status: int  # 0x0000 success, or a warning status


@dataclass(frozen=True)
class Refused:
    """An object the PACS answered with a failure status (or no status at all)."""

    path: Path
    status: int | None  # None: no response (DIMSE timeout or abort)
    note: str = ""

    def __str__(self) -> str:
        if self.note:
            return f"refused {self.path.name}: {self.note}"
        if self.status is None:
            return f"no response storing {self.path.name} (timeout or abort)"
        return f"refused {self.path.name}: status 0x{self.status:04X}"


@dataclass(frozen=True)
class BatchResult:
    """What one association did: stored, refused, and not tried (after a lost association)."""

    stored: list[Stored]
    refused: list[Refused]
    unsent: list[Path]


def store_batch(items: Sequence[tuple[Path, StorePriority]], node: PacsNode) -> BatchResult:
    """C-STORE each ``(path, priority)`` over one association, carrying on past a refusal.

    Raises :class:`StoreError` when no association is made (PACS down, AE titles wrong);
    an object without a response ends the association, and the rest come back ``unsent``.
    """
    datasets = [(path, priority, pydicom.dcmread(path)) for path, priority in items]
    if not datasets:
        return BatchResult([], [], [])
    association = _associate(node, [dataset for _, _, dataset in datasets])
    result = BatchResult([], [], [])
    try:
        for message_id, (path, priority, dataset) in enumerate(datasets, start=1):
            if not association.is_established:
                result.unsent.append(path)
                continue
            try:
                status = association.send_c_store(dataset, msg_id=message_id, priority=priority)
            except ValueError:  # no accepted presentation context for its SOP Class/syntax
                note = "no presentation context accepted for its SOP Class and transfer syntax"
                result.refused.append(Refused(path, SOP_CLASS_NOT_SUPPORTED, note))
                continue
            code = _status_code(status)
            if code is None or (code != 0x0000 and code not in WARNING_STATUSES):
                result.refused.append(Refused(path, code))
                if code is None:
                    association.abort()
                continue
            if code:
                log.warning("%s stored %s with warning status 0x%04X", node, path.name, code)
            result.stored.append(Stored(path, str(dataset.SOPInstanceUID), code))
    finally:
        if association.is_established:
            association.release()
    log.info("stored %d result object(s) on %s", len(result.stored), node)
    return result


def send(
    paths: Sequence[Path], node: PacsNode, priority: StorePriority = StorePriority.MEDIUM
) -> list[Stored]:
    """C-STORE every file in ``paths`` to ``node`` over one association.

    Raises :class:`StoreError` if the association cannot be made or any store fails;
    files stored before the failure stay stored.
    """
    result = store_batch([(path, priority) for path in paths], node)
    if result.refused:
        raise StoreError(f"{node} {result.refused[0]}")
    return result.stored


def _associate(node: PacsNode, datasets: Sequence[Dataset]) -> Association:
    ae = AE(ae_title=node.calling_ae_title)
    ae.connection_timeout = node.timeout_s
    ae.acse_timeout = node.timeout_s
    ae.dimse_timeout = node.timeout_s
    ae.network_timeout = node.timeout_s
    for sop_class, syntax in sorted({_context(ds) for ds in datasets}):
        # A compressed object (the SC: JPEG baseline) gets a context of its own syntax alone,
        # or the PACS could pick an uncompressed one it cannot be sent in.
        uncompressed = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        syntaxes = (
            list(dict.fromkeys([syntax, *uncompressed])) if syntax in uncompressed else [syntax]
        )
        ae.add_requested_context(sop_class, syntaxes)
    association = ae.associate(node.host, node.port, ae_title=node.called_ae_title)
    if not association.is_established:
        if association.is_rejected:
            raise StoreError(f"{node} rejected the association (check both AE titles)")
        raise StoreError(
            f"{node} could not be reached or aborted the association within "
            f"{node.timeout_s:g} s (check host, port and that the PACS is up)"
        )
    return association


def _context(dataset: Dataset) -> tuple[str, str]:
    return str(dataset.SOPClassUID), str(dataset.file_meta.TransferSyntaxUID)


def _status_code(status: Dataset) -> int | None:
    return int(status.Status) if "Status" in status else None
