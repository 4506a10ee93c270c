"""A claimed file's private copy of record: the inode it was received as, out of senders' reach.

A sender may replace a file under the same name at any moment (modalities re-send). If the
worker read the inbox path, then moved the inbox path, the file moved could be another
patient's image than the one scored, and the SR/SC built from the archived file would carry
that patient's identity with the first patient's result. So before a single byte is read,
the claimed file is renamed into ``<inbox>/.cxr-staging/<row id>`` (same filesystem: an
atomic rename that takes the inode, never a copy of whatever the name holds later). From
then on the worker reads, verifies and files only that path; a file written to the old
name afterwards is a new file in the inbox and becomes a row of its own.

The staging folder is a dot-folder inside the inbox: the watcher ignores it, and it lies on
the inbox's filesystem by construction. Its name is the row id, so a redelivered or taken-over
task of the same row finds the file where the first attempt left it.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ingest.filing import FilingError, move_into_place

STAGING_FOLDER = ".cxr-staging"


@dataclass(frozen=True)
class Fingerprint:
    """What changes when a file's bytes are replaced or rewritten: inode, size, mtime."""

    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> Fingerprint:
        stat = path.lstat()
        return cls(stat.st_ino, stat.st_size, stat.st_mtime_ns)


def staging_dir(inbox: Path) -> Path:
    return inbox / STAGING_FOLDER


def staged_path(inbox: Path, entry_id: int) -> Path:
    """Where row ``entry_id``'s file lies once claimed."""
    return staging_dir(inbox) / str(entry_id)


def stage(source: Path, staged: Path) -> Path:
    """Rename ``source`` to ``staged`` unless an earlier attempt already did; return ``staged``.

    Raises ``FileNotFoundError`` when neither exists (the file left the inbox), and when a
    folder now has the file's name: a folder is never taken (it may hold other arrivals). A
    symlink is moved as a link, never followed. Across filesystems (an inbox sub-folder that
    is a mount point) the bytes are copied and the source removed, as
    :func:`move_into_place` does.
    """
    if staged.exists() or staged.is_symlink():
        return staged
    if stat.S_ISDIR(source.lstat().st_mode):
        raise FileNotFoundError(errno.ENOENT, "a folder now has the file's name")
    staged.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        source.rename(staged)
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
        move_into_place(source, staged)
    if stat.S_ISDIR(staged.lstat().st_mode):  # swapped for a folder in between: give it back
        staged.rename(source)
        raise FileNotFoundError(errno.ENOENT, "a folder now has the file's name")
    return staged


def unstage(staged: Path, original: Path) -> Path:
    """Put a staged file back into the inbox, as a new arrival, without overwriting anything.

    Used when the staged bytes are not those the row was admitted with (the sender replaced
    the file before the claim): they belong to no row yet, and the watcher admits them under
    their own identity. Returns the inbox path (``original``, or a free ``-1``... sibling).
    """
    original.parent.mkdir(parents=True, exist_ok=True)
    for counter in range(10_000):
        target = (
            original
            if counter == 0
            else original.with_name(f"{original.stem}-{counter}{original.suffix}")
        )
        try:
            os.link(staged, target, follow_symlinks=False)  # fails if the name is taken
        except FileExistsError:
            continue
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            if target.exists() or target.is_symlink():  # no hard links (some shares)
                continue
            staged.rename(target)
            return target
        staged.unlink()
        return target
    raise FilingError(f"no free name next to {original.name} in the inbox")
