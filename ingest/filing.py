"""Where an original goes when its row is final: the archive or ``quarantine/<reason>/``.

Files are moved, never deleted and never overwritten. A move within one filesystem is an
atomic rename; across filesystems (inbox on a share, archive on local disk) the bytes are
copied to a hidden temporary name, flushed, renamed into place, and only then is the source
removed. Quarantined files get a JSON sidecar (``<name>.json``) that a PACS administrator can
read; it holds no patient-identifying values.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

SIDECAR_SUFFIX = ".json"


class FilingError(OSError):
    """An original could not be moved out of the inbox."""


def archive_destination(archive: Path, received: datetime, sha256: str, name: str) -> Path:
    """``archive/YYYY/MM/DD/<sha256[:16]>_<name>``: dated for retention jobs, and the hash
    prefix keeps two different files with one name apart."""
    return archive / received.strftime("%Y/%m/%d") / f"{sha256[:16]}_{_basename(name)}"


def quarantine_destination(quarantine: Path, reason: str, sha256: str, name: str) -> Path:
    """``quarantine/<reason>/<sha256[:16]>_<name>``."""
    if not reason or "/" in reason or reason.startswith("."):
        raise ValueError(f"reason {reason!r} is not a folder name")
    return quarantine / reason / f"{sha256[:16]}_{_basename(name)}"


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
        return target
    except OSError as error:
        if error.errno != errno.EXDEV:  # another filesystem: copy, then remove
            raise FilingError(
                f"cannot move a file into {target.parent}: {error.strerror}"
            ) from error
    partial = target.with_name(f".{target.name}.partial")
    try:
        shutil.copy2(source, partial, follow_symlinks=False)
        with partial.open("rb") as copied:
            os.fsync(copied.fileno())
        partial.rename(target)
        source.unlink()
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise FilingError(f"cannot copy a file into {target.parent}: {error.strerror}") from error
    return target


def quarantine_file(source: Path, destination: Path, sidecar: Mapping[str, object]) -> Path:
    """Write the sidecar, then move ``source`` beside it. Returns the file's new path."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    target = _free_name(destination)
    write_sidecar(sidecar_path(target), sidecar)
    return move_into_place(source, target)


def write_sidecar(path: Path, content: Mapping[str, object]) -> None:
    """Write JSON atomically (temporary name, then rename)."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(dict(content), indent=2, sort_keys=True, default=str) + "\n")
    partial.replace(path)


def _free_name(destination: Path) -> Path:
    if not destination.exists() and not destination.is_symlink():
        return destination
    for counter in range(1, 10_000):
        candidate = destination.with_name(f"{destination.stem}-{counter}{destination.suffix}")
        if not candidate.exists() and not candidate.is_symlink():
            return candidate
    raise FilingError("no free name for the file: 10,000 taken")  # its name may be PHI


def _basename(name: str) -> str:
    base = Path(name).name
    return base if base and not base.startswith(".") else "unnamed"
