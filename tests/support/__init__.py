"""What the tests import; fixtures stay in the conftest files.

Here: a free port, a wait until a condition holds, and the /proc look-ups of the process
tests. Beside it: :mod:`tests.support.web` (the seeded review-page worklist),
:mod:`tests.support.pacs` (radiographs and predictions for the SR/SC tests) and
:mod:`tests.support.servers` (throwaway Redis and PostgreSQL servers for outages).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on (now; bind it soon)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections and stays ours while in use: bound, never
    listening (a port :func:`free_port` found free may be taken by another suite's server)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield int(held.getsockname()[1])


def wait_until(
    condition: Callable[[], object],
    timeout_s: float = 10.0,
    what: str = "the condition",
    logs: Sequence[Path] = (),
    interval_s: float = 0.1,
) -> None:
    """Return once ``condition()`` is true; fail naming ``what``, with the tails of ``logs``,
    after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval_s)
    tails = "\n".join(
        f"--- {p}\n{p.read_text(errors='replace')[-4000:]}" for p in logs if p.exists()
    )
    raise AssertionError(f"timed out waiting for {what}\n{tails}")


def children(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def rss_kib(pid: int) -> int:
    """Resident set size of one process, in KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
