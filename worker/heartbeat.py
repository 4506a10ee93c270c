"""Liveness of the long-running loops, for the container health checks of ``watch`` and
``deliver``.

Their health checks ran ``cxr-triage db check``: a new process asking the database, which says
nothing about whether the watcher's loop still turns (a share that hangs every ``stat``, a
deadlock) or whether ``deliver`` is up at all. So the loop itself beats: each pass calls its
:class:`Heartbeat`, which at most every :data:`BEAT_EVERY_S` rewrites
``<data_dir>/alive/<host>/<name>.json`` with its pid, the time, and how long the loop may
legitimately go without a pass (``stale_after_s``: a rescan of a large share; a batch sent to
a PACS that answers slowly). ``cxr-triage status --alive NAME`` exits 0 while that file is
younger than its ``stale_after_s`` and its pid is alive, 1 otherwise (no database needed).

Per host like the readiness markers (:mod:`worker.readiness`), whose pid checks it shares.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from worker.readiness import pid_alive, read_marker, write_marker

log = logging.getLogger(__name__)

#: A loop rewrites its file at most this often (its passes are much more frequent).
BEAT_EVERY_S = 10.0


def heartbeat_file(data_dir: Path, name: str) -> Path:
    return data_dir / "alive" / socket.gethostname() / f"{name}.json"


class Heartbeat:
    """Called once per pass of a loop; a write every :data:`BEAT_EVERY_S` at most."""

    def __init__(
        self,
        data_dir: Path,
        name: str,
        stale_after_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = heartbeat_file(data_dir, name)
        self.stale_after_s = stale_after_s
        self.clock = clock
        self._last: float | None = None
        self._failing = False

    def __call__(self) -> None:
        now = self.clock()
        if self._last is not None and now - self._last < BEAT_EVERY_S:
            return
        try:
            write_marker(
                self.path,
                {"pid": os.getpid(), "at": now, "stale_after_s": self.stale_after_s},
            )
        except OSError as error:  # a full disk must not stop the loop; it shows as not alive
            if not self._failing:
                log.warning("heartbeat %s could not be written: %s", self.path.name, error)
            self._failing = True
            return
        self._failing = False
        self._last = now

    def stop(self) -> None:
        """The loop ended cleanly: no longer alive."""
        self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Liveness:
    name: str
    alive: bool
    reason: str

    def summary(self) -> str:
        return f"{self.name}: {'alive' if self.alive else 'not alive'} ({self.reason})"


def check(data_dir: Path, name: str, clock: Callable[[], float] = time.time) -> Liveness:
    """Whether ``name``'s loop on this host has beaten within its ``stale_after_s``."""
    content = read_marker(heartbeat_file(data_dir, name))
    if content is None:
        return Liveness(name, False, "no heartbeat on this host: not running, or not started")
    try:
        pid = int(content["pid"])
        age = clock() - float(content["at"])
        limit = float(content["stale_after_s"])
    except (KeyError, TypeError, ValueError):
        return Liveness(name, False, "its heartbeat file is not one this version writes")
    if not pid_alive(pid):
        return Liveness(name, False, f"its process {pid} is gone")
    if age > limit:
        return Liveness(name, False, f"last pass {age:.0f} s ago, over {limit:.0f} s: stuck")
    return Liveness(name, True, f"process {pid}, last pass {max(age, 0):.0f} s ago")
