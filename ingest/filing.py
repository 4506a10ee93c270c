"""Where an original goes when its row is final: the archive or ``quarantine/<reason>/``.

Files are moved, never deleted and never overwritten. A move within one filesystem is an
atomic rename; across filesystems (inbox on a share, archive on local disk) the bytes are
copied to a hidden temporary name, flushed, renamed into place, and only then is the source
removed. Quarantined files get a JSON sidecar (``<name>.json``, one :class:`Sidecar`) that a
PACS administrator can read; it holds no patient-identifying values.

Archived and quarantined files are named by content hash, never by the sender's file name:
senders put patient names in file names (issue 20). The original name is kept only in the
worklist row (``source_name``), which is protected like the rest of the worklist. A filed
file gets the process's file mode (``0666`` less the umask: ``0600`` by default, see
``CXR_UMASK``), not the mode the sender gave it on the share.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import KW_ONLY, asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".json"
#: Most bytes of a name :func:`safe_name` keeps (a non-UTF-8 name renamed in the inbox).
#: NAME_MAX is 255 bytes on every filesystem we target: 200 leaves room for a ``-NNNN``
#: counter and the temporary ``.`` and ``.partial`` around it.
MAX_NAME_BYTES = 200
#: The one part of the sender's name a filed file keeps: a short alphanumeric extension.
EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,8}")


class FilingError(OSError):
    """An original could not be moved out of the inbox."""


@dataclass(frozen=True)
class Sidecar:
    """What a PACS administrator needs to act on a quarantined file; no patient data.

    Every key is written, ``null`` where it does not apply (a file set aside without a row
    has no ``worklist_id``), so tools reading sidecars see one schema whoever quarantined
    the file: the pipeline, the intake or the lease keeper.
    """

    reason: str  # the quarantine folder: an ingest.errors.Reason value, or "duplicate"
    detail: str | None  # a sentence for a person, without patient data
    _: KW_ONLY
    # No file name: the sender's name may carry the patient's; the row keeps it.
    file_sha256: str | None = None  # None: never read (a symlink or special file)
    worklist_id: int | None = None
    status: str | None = None  # the row's final status
    received_at: datetime | None = None
    duplicate_of_worklist_id: int | None = None
    quarantined_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        if not self.reason:
            raise ValueError("a quarantined file needs a reason")

    def to_json(self) -> str:
        values = {
            key: value.isoformat() if isinstance(value, datetime) else value
            for key, value in asdict(self).items()
        }
        return json.dumps(values, indent=2, sort_keys=True) + "\n"


def archive_destination(archive: Path, received: datetime, sha256: str, name: str) -> Path:
    """``archive/YYYY/MM/DD/<sha256[:16]>.<ext>``: dated for retention jobs, named by content
    (``name`` gives only its extension, e.g. ``.dcm``)."""
    return archive / received.strftime("%Y/%m/%d") / f"{sha256[:16]}{_extension(name)}"


def quarantine_destination(quarantine: Path, reason: str, key: str, name: str) -> Path:
    """``quarantine/<reason>/<key[:16]>.<ext>``; ``key`` is the content hash, or a random
    hex token for a file that is never read (a symlink)."""
    if not reason or "/" in reason or reason.startswith("."):
        raise ValueError(f"reason {reason!r} is not a folder name")
    return quarantine / reason / f"{key[:16]}{_extension(name)}"


def sidecar_path(destination: Path) -> Path:
    return destination.with_name(destination.name + SIDECAR_SUFFIX)


def move_into_place(source: Path, destination: Path) -> Path:
    """Move ``source`` to ``destination`` (or a free ``-1``, ``-2``... sibling if taken).

    Returns where the file now lies. Symlinks are moved as links, never followed.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    target = _free_name(destination)
    try:
        source.rename(target)
    except OSError as error:
        if error.errno != errno.EXDEV:  # another filesystem: copy, then remove
            raise FilingError(
                f"cannot move a file into {target.parent}: {error.strerror}"
            ) from error
    else:
        _settle_mode(target)
        return target
    partial = target.with_name(f".{target.name}.partial")
    try:
        shutil.copy2(source, partial, follow_symlinks=False)
        with partial.open("rb") as copied:
            os.fsync(copied.fileno())
        _settle_mode(partial)
        partial.rename(target)
        source.unlink()
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise FilingError(f"cannot copy a file into {target.parent}: {error.strerror}") from error
    return target


def _settle_mode(path: Path) -> None:
    """Give a moved file the mode a file created here would get (a rename keeps the
    sender's, often 0644). A symlink is left alone: chmod would follow it."""
    if path.is_symlink():
        return
    try:
        path.chmod(0o666 & ~process_umask())
    except OSError as error:  # filed all the same; the name is not logged (it may be PHI)
        log.warning("a filed file keeps its mode: %s", error.strerror)


def process_umask() -> int:
    """The process's file creation mask, read without changing it (``os.umask`` can only
    be read by setting it, which races with other threads)."""
    try:
        with Path("/proc/self/status").open() as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o077  # cannot tell: the strictest the settings allow by default


def rename_to_utf8(path: Path, inbox: Path) -> Path:
    """Give a file whose path below ``inbox`` is not valid UTF-8 a name that is, in place.

    A name the database cannot store (PostgreSQL and SQLite both refuse lone surrogates)
    failed its whole admission batch for ever (issue 12). The file is renamed within the
    inbox to its :func:`safe_name` (one filesystem: an atomic rename that never replaces
    another file) and admitted under that name. Returns the path the file now has.
    """
    relative = path.relative_to(inbox)
    try:
        str(relative).encode("utf-8")
        return path
    except UnicodeEncodeError:
        pass
    target = _free_name(inbox.joinpath(*(safe_name(part) for part in relative.parts)))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(path, target, follow_symlinks=False)  # fails rather than replace a file
    except OSError as error:
        if error.errno == errno.EEXIST:
            raise
        path.rename(target)  # a share without hard links: checked free just above
        return target
    path.unlink()
    return target


def quarantine_file(source: Path, destination: Path, sidecar: Sidecar) -> Path:
    """Write the sidecar, then move ``source`` beside it. Returns the file's new path."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    target = _free_name(destination)
    write_sidecar(sidecar_path(target), sidecar)
    return move_into_place(source, target)


def write_sidecar(path: Path, sidecar: Sidecar) -> None:
    """Write the sidecar atomically (temporary name, then rename)."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(sidecar.to_json())
    partial.replace(path)


def _free_name(destination: Path) -> Path:
    if not destination.exists() and not destination.is_symlink():
        return destination
    for counter in range(1, 10_000):
        candidate = destination.with_name(f"{destination.stem}-{counter}{destination.suffix}")
        if not candidate.exists() and not candidate.is_symlink():
            return candidate
    raise FilingError("no free name for the file: 10,000 taken")  # its name may be PHI


def safe_name(name: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """``name`` as valid UTF-8 of at most ``max_bytes`` bytes, for a file name or a row.

    Bytes that are not UTF-8 (Python keeps them as lone surrogates) become ``\\xNN``
    escapes, as ``ls -b`` would show them. A name still too long keeps its start and its
    extension, joined by ``~`` and 8 hex digits of the full name's hash, so that two long
    names sharing a start stay apart.
    """
    raw = os.fsencode(name)
    text = raw.decode("utf-8", "backslashreplace")
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    stem, dot, extension = text.rpartition(".")
    suffix = f"{dot}{extension}" if stem and len(extension.encode("utf-8")) <= 16 else ""
    keep = max_bytes - len(suffix.encode("utf-8")) - 9
    start = encoded[:keep].decode("utf-8", "ignore")  # never half a character
    return f"{start}~{hashlib.sha256(raw).hexdigest()[:8]}{suffix}"


def _extension(name: str) -> str:
    """The extension of the sender's name, lower case, if it is a short alphanumeric one."""
    suffix = Path(name).suffix
    return suffix.lower() if EXTENSION.fullmatch(suffix) else ""
