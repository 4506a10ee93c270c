"""Worker readiness: ready means every pool process has loaded and warmed the model.

Celery logs ``<node> ready.`` once its consumer is connected, but the prefork children load
TensorFlow, the model and its traced graphs in ``worker_process_init`` after that: about 15 s
in which the worker looks ready and cannot score. So readiness is recorded where it happens:

- each process that has warmed the model writes ``process-<pid>.json`` (its worker's pid in it)
  and removes it when it exits;
- the worker's main process writes ``worker-<pid>.json`` with how many processes it runs, and
  logs ``<node> ready: N of N processes have the model loaded and warm`` only when they all do;
- ``cxr-triage status --ready`` (the compose health check) exits 0 only when every live worker
  on this host has all its processes warm.

Markers live under ``<data_dir>/ready/<host name>/``: a data folder shared between machines
keeps each host's workers apart, and pids are only compared on the host that owns them. A pid
counts only while it is alive and not a zombie, and a process marker only while the process is
still a child of the worker that names it, so a marker left by a SIGKILLed process never makes
a worker look ready (nor does a reused pid).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

WORKER_PREFIX = "worker-"
PROCESS_PREFIX = "process-"
POLL_S = 0.5


def connected_not_ready(record: logging.LogRecord) -> bool:
    """A filter for Celery's worker logger. Celery's ``<node> ready.`` means connected; the
    model is not loaded yet. Say so: the ready line is this module's, logged once every
    process is warm (:func:`watch_and_log`)."""
    message = record.msg  # the PHI guard may have merged the node name in already
    if isinstance(message, str) and message.endswith(" ready."):
        record.msg = message.removesuffix(" ready.") + (
            " connected to the broker; not ready until the model is warm"
        )
    return True


def marker_folder(data_dir: Path) -> Path:
    """This host's readiness markers under ``data_dir``."""
    return data_dir / "ready" / socket.gethostname()


def write_marker(path: Path, content: dict[str, Any]) -> None:
    """Atomically (rename), so a reader never sees half a marker."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(content))
    partial.replace(path)


def read_marker(path: Path) -> dict[str, Any] | None:
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


def _proc_state(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) from /proc, or None where /proc cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # the command name may hold spaces and ")"
    return fields[0], int(fields[1])


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    state = _proc_state(pid)
    return state is None or state[0] not in ("Z", "X")


def mark_process_warm(data_dir: Path, seconds: float) -> None:
    """This process has loaded and warmed the model (called after ``warm_up`` succeeded)."""
    pid = os.getpid()
    write_marker(
        marker_folder(data_dir) / f"{PROCESS_PREFIX}{pid}.json",
        {"pid": pid, "worker_pid": os.getppid(), "warm_s": round(seconds, 2), "at": time.time()},
    )


def mark_process_solo(data_dir: Path, seconds: float) -> None:
    """As :func:`mark_process_warm`, for a solo/thread pool: the worker scores in itself."""
    pid = os.getpid()
    write_marker(
        marker_folder(data_dir) / f"{PROCESS_PREFIX}{pid}.json",
        {"pid": pid, "worker_pid": pid, "warm_s": round(seconds, 2), "at": time.time()},
    )


def forget_process(data_dir: Path, pid: int | None = None) -> None:
    (marker_folder(data_dir) / f"{PROCESS_PREFIX}{pid or os.getpid()}.json").unlink(missing_ok=True)


def register_worker(data_dir: Path, node: str, processes: int) -> None:
    """The worker's main process: how many warm processes make it ready. Clears markers of
    processes that died without removing theirs."""
    folder = marker_folder(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.json"):
        content = read_marker(stale)
        if content is None or not pid_alive(int(content.get("pid", 0))):
            stale.unlink(missing_ok=True)
    pid = os.getpid()
    write_marker(
        folder / f"{WORKER_PREFIX}{pid}.json",
        {"pid": pid, "node": node, "processes": processes, "at": time.time()},
    )


def forget_worker(data_dir: Path) -> None:
    (marker_folder(data_dir) / f"{WORKER_PREFIX}{os.getpid()}.json").unlink(missing_ok=True)


@dataclass(frozen=True)
class WorkerReadiness:
    node: str
    pid: int
    processes: int
    warm: int

    @property
    def ready(self) -> bool:
        return self.warm >= self.processes

    def as_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "pid": self.pid,
            "processes": self.processes,
            "warm": self.warm,
            "ready": self.ready,
        }


@dataclass(frozen=True)
class HostReadiness:
    workers: tuple[WorkerReadiness, ...]

    @property
    def ready(self) -> bool:
        """At least one worker, and every worker on this host with all its processes warm."""
        return bool(self.workers) and all(w.ready for w in self.workers)

    def summary(self) -> str:
        if not self.workers:
            return "worker: not ready (no worker running on this host)"
        parts = [
            f"{w.node} {'ready' if w.ready else 'not ready'} ({w.warm} of {w.processes} "
            "processes with the model warm)"
            for w in self.workers
        ]
        return "worker: " + "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {"ready": self.ready, "workers": [w.as_dict() for w in self.workers]}


def _warm_processes(folder: Path, worker_pid: int) -> int:
    count = 0
    for path in folder.glob(f"{PROCESS_PREFIX}*.json"):
        content = read_marker(path)
        if content is None or int(content.get("worker_pid", 0)) != worker_pid:
            continue
        pid = int(content.get("pid", 0))
        if not pid_alive(pid):
            continue
        if pid != worker_pid:  # a pool child: still this worker's (not a reused pid)?
            state = _proc_state(pid)
            if state is not None and state[1] != worker_pid:
                continue
        count += 1
    return count


def check(data_dir: Path) -> HostReadiness:
    """Readiness of every live worker on this host, from the markers."""
    folder = marker_folder(data_dir)
    workers = []
    for path in sorted(folder.glob(f"{WORKER_PREFIX}*.json")):
        content = read_marker(path)
        if content is None:
            continue
        pid = int(content.get("pid", 0))
        if not pid_alive(pid):
            continue
        workers.append(
            WorkerReadiness(
                node=str(content.get("node", "?")),
                pid=pid,
                processes=int(content.get("processes", 1)),
                warm=_warm_processes(folder, pid),
            )
        )
    return HostReadiness(tuple(workers))


def watch_and_log(data_dir: Path, node: str, stop: threading.Event) -> threading.Thread:
    """In the worker's main process: log ``ready`` when all its processes are warm, and
    ``not ready`` when one is lost (killed, recycled) until its replacement is warm."""

    def loop() -> None:
        pid = os.getpid()
        was_ready = False
        while not stop.wait(POLL_S):
            mine = [w for w in check(data_dir).workers if w.pid == pid]
            if not mine:
                continue
            worker = mine[0]
            if worker.ready and not was_ready:
                log.info(
                    "%s ready: %d of %d processes have the model loaded and warm",
                    node,
                    worker.warm,
                    worker.processes,
                )
            elif was_ready and not worker.ready and not stop.is_set():  # not a shutdown
                log.warning(
                    "%s not ready: %d of %d processes have the model warm (one is restarting)",
                    node,
                    worker.warm,
                    worker.processes,
                )
            was_ready = worker.ready

    thread = threading.Thread(target=loop, name="readiness", daemon=True)
    thread.start()
    return thread
