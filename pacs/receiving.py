"""Where a C-STORE's bytes go: a private file while they arrive, then a name in the inbox
that never replaces another file.

- **While receiving**: each data set is written, as its fragments arrive, to a ``.part`` file
  in ``<inbox>/.cxr-receiving/<instance>/`` (a dot-folder: the watcher never looks at it; on
  the inbox's file system: the rename into place is atomic). The file is created ``0600``,
  hashed (SHA-256) as it is written, and refused past the object size limit. Memory holds
  one write buffer, whatever the object's size.
- **Orphans**: each running receiver holds an exclusive ``flock`` on
  ``.cxr-receiving/<instance>.lock``. At start, a receiver removes every instance folder
  whose lock nobody holds: the ``.part`` files of a receiver that was killed. They were
  never acknowledged (Success is only sent after the rename), so the senders still have
  them. Two receivers sharing an inbox never touch each other's files. ``.part`` files of
  the older receiver (``.<UID>.<8 hex>.part`` in the inbox itself) are removed too.
- **Filing** (:func:`file_into_inbox`): ``<SOP Instance UID>.dcm`` (an invalid UID: a name
  from the content's hash), linked into place with ``link(2)``, which fails rather than
  replace an existing name. A file already there with the same bytes makes the new one a
  duplicate: dropped, and answered Success (the object is safe). A file there with other
  bytes under the same SOP Instance UID (another image, perhaps another patient, claiming
  this identity) is never overwritten: the new one is kept beside it as
  ``<UID>.<sha256 prefix>.dcm``, and the intake, which allows one worklist row per SOP
  Instance UID, quarantines whichever comes second as a ``duplicate`` with a sidecar that
  says so. Both are kept; neither is lost. The inbox folder is fsynced after the link, so
  an acknowledged object survives a power cut.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID

from ingest.hashing import file_sha256
from pacs.scp_transport import ObjectTooLargeError

log = logging.getLogger(__name__)

RECEIVING_FOLDER = ".cxr-receiving"
PART_SUFFIX = ".part"
LOCK_SUFFIX = ".lock"
PREAMBLE = b"\x00" * 128 + b"DICM"
WRITE_BUFFER_BYTES = 1024 * 1024
#: ``.part`` names the receiver of before issue 20 left in the inbox itself.
_LEGACY_PART = re.compile(r"^\.(?:[0-9.]{1,64}|cxr-[0-9a-f]{32})\.[0-9a-f]{8}\.part$")
_UID_MAX_LENGTH = 64


class PartFile:
    """One C-STORE data set being received: a ``0600`` file, hashed as it is written.

    The interface pynetdicom expects of its chunked-dataset file (``write``,
    ``file.flush()``, ``close()``, ``name``); see :class:`pacs.scp_transport.ObjectSink`.
    """

    def __init__(self, path: Path, file_meta: FileMetaDataset, max_dataset_bytes: int) -> None:
        self.path = path
        self.name = str(path)
        self.max_dataset_bytes = max_dataset_bytes
        self.dataset_bytes = 0
        self._error: OSError | None = None
        self._sha256 = hashlib.sha256()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        descriptor = os.open(path, flags, 0o600)
        self._stream: BinaryIO | None = os.fdopen(descriptor, "wb", WRITE_BUFFER_BYTES)
        head = io.BytesIO()
        head.write(PREAMBLE)
        write_file_meta_info(head, file_meta, enforce_standard=True)  # type: ignore[arg-type]
        self.dataset_offset = head.tell()
        self._write(head.getvalue())
        self.complete = False

    @property
    def file(self) -> PartFile:
        """pynetdicom flushes ``file`` after every fragment; the buffer is flushed, and the
        file synced, once, in :meth:`finish`."""
        return self

    def flush(self) -> None:
        pass

    def write(self, data: bytes) -> int:
        self.dataset_bytes += len(data)
        if self.dataset_bytes > self.max_dataset_bytes:
            self.discard()
            raise ObjectTooLargeError(
                f"a data set over the receiver's {self.max_dataset_bytes:,} byte limit"
            )
        if self._error is None:
            try:
                self._write(data)
            except OSError as error:  # a full disk: the rest is read and dropped, and the
                self._error = error  # C-STORE answered "out of resources" (finish raises)
                self.discard()
        return len(data)

    def _write(self, data: bytes) -> None:
        if self._stream is None:
            raise OSError(errno.EBADF, "the object's file is closed")
        self._stream.write(data)
        self._sha256.update(data)

    def finish(self, mode: int) -> str:
        """Flush, sync and close the complete file, give it ``mode``; its SHA-256."""
        if self._error is not None:
            raise self._error
        if self._stream is None:
            raise OSError(errno.EBADF, "the object's file is closed")
        stream, self._stream = self._stream, None
        try:
            stream.flush()
            os.fchmod(stream.fileno(), mode)
            os.fsync(stream.fileno())
        finally:
            stream.close()
        self.complete = True
        return self._sha256.hexdigest()

    def close(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            with contextlib.suppress(OSError):
                stream.close()

    def discard(self) -> None:
        """Close and remove the file (a refused, aborted or cut-off object)."""
        self.close()
        self.path.unlink(missing_ok=True)


class ReceivingArea:
    """This receiver's private folder for objects in transit, and the clean-up of the
    folders of receivers that died."""

    def __init__(self, inbox: Path) -> None:
        self.inbox = inbox
        self.root = inbox / RECEIVING_FOLDER
        self.instance = uuid.uuid4().hex
        self.folder = self.root / self.instance
        self._lock: BinaryIO | None = None

    def open(self) -> int:
        """Create the folders, take this instance's lock, remove orphans; how many files
        were removed."""
        self.root.mkdir(parents=True, exist_ok=True)
        removed = self._remove_orphans()
        lock = (self.root / f"{self.instance}{LOCK_SUFFIX}").open("wb")
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._lock = lock
        self.folder.mkdir(mode=0o700)
        if removed:
            log.warning(
                "removed %d partial object(s) left by a receiver that stopped mid-transfer "
                "(never acknowledged: their senders still hold them)",
                removed,
            )
        return removed

    def close(self) -> None:
        """Remove this instance's folder and lock (whatever is left was never acknowledged)."""
        if self._lock is None:
            return
        shutil.rmtree(self.folder, ignore_errors=True)
        (self.root / f"{self.instance}{LOCK_SUFFIX}").unlink(missing_ok=True)
        self._lock.close()
        self._lock = None

    def new_part(self) -> Path:
        return self.folder / f"{uuid.uuid4().hex}{PART_SUFFIX}"

    def _remove_orphans(self) -> int:
        removed = 0
        for lock_path in self.root.glob(f"*{LOCK_SUFFIX}"):
            try:
                with lock_path.open("rb+") as lock:
                    try:
                        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except OSError:
                        continue  # a live receiver holds it
                    folder = self.root / lock_path.name.removesuffix(LOCK_SUFFIX)
                    removed += _remove_tree(folder)
                    lock_path.unlink(missing_ok=True)
            except OSError as error:
                log.warning("cannot clean a receiver's leftovers: %s", error.strerror)
        for folder in self.root.iterdir():
            # a folder whose lock is gone (removed by hand, or by a clean-up that died)
            if folder.is_dir() and not (self.root / f"{folder.name}{LOCK_SUFFIX}").exists():
                removed += _remove_tree(folder)
        for entry in self.inbox.iterdir():
            if _LEGACY_PART.match(entry.name) and entry.is_file():
                entry.unlink(missing_ok=True)
                removed += 1
        return removed


def _remove_tree(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    count = sum(1 for entry in folder.rglob("*") if entry.is_file())
    shutil.rmtree(folder, ignore_errors=True)
    return count


class Filing(StrEnum):
    NEW = "new"  # under its own name
    DUPLICATE = "duplicate"  # the same bytes were already in the inbox: this copy dropped
    UID_CLASH = "uid_clash"  # other bytes under the same SOP Instance UID: kept beside it


@dataclass(frozen=True)
class Filed:
    path: Path  # where the object is now (for a duplicate: the copy already there)
    outcome: Filing


def inbox_stem(sop_instance_uid: str, sha256: str) -> str:
    """The file name's stem: the SOP Instance UID when it is a valid one (as dcmtk's
    storescp names files), else ``cxr-<hash>``; never the sender's free text."""
    uid = sop_instance_uid.strip("\0 ")
    if uid and len(uid) <= _UID_MAX_LENGTH and UID(uid).is_valid:
        return uid
    return f"cxr-{sha256[:32]}"


def file_into_inbox(part: Path, inbox: Path, stem: str, sha256: str) -> Filed:
    """Move the complete ``part`` into ``inbox`` without ever replacing a file."""
    final = inbox / f"{stem}.dcm"
    outcome = _link(part, final, sha256)
    if outcome is Filing.UID_CLASH:
        alternative = inbox / f"{stem}.{sha256[:16]}.dcm"
        if _link(part, alternative, sha256) is Filing.NEW:
            final = alternative
        else:  # the same bytes arrived under the same clash before: a duplicate of that one
            final, outcome = alternative, Filing.DUPLICATE
    part.unlink(missing_ok=True)
    _sync_folder(inbox)
    return Filed(final, outcome)


def _link(part: Path, final: Path, sha256: str) -> Filing:
    """NEW once ``part`` is also ``final``; otherwise what lies at ``final``."""
    try:
        os.link(part, final)
        return Filing.NEW
    except FileExistsError:
        pass
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
        # No hard links here (some SMB/FUSE file systems): rename, having looked first.
        if not final.exists():
            part.rename(final)
            return Filing.NEW
    return Filing.DUPLICATE if _same_bytes(final, part, sha256) else Filing.UID_CLASH


def _same_bytes(existing: Path, part: Path, sha256: str) -> bool:
    try:
        if existing.stat().st_size != part.stat().st_size:
            return False
        return file_sha256(existing) == sha256
    except OSError:
        return False  # it left meanwhile: treat as different, keep ours beside


def _sync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some network file systems refuse a folder fsync; the rename is still done
    finally:
        os.close(descriptor)
