"""Long-running services wired from the settings: the watcher, and the worker's argv.

The CLI's ``watch``, ``worker`` and ``run`` commands are thin shells around these.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from sqlalchemy import func, select

from db.models import WAITING_STATUSES, WorklistEntry
from ingest.staging import staging_dir
from ingest.watcher import InboxWalk, InboxWatcher, OnStableFiles, WatchConfig
from worker.celery_app import QUEUES
from worker.intake import Intake
from worker.resources import get_session_factory
from worker.settings import Settings

log = logging.getLogger(__name__)


def build_intake(settings: Settings) -> Intake:
    """The watcher's callback, wired to the database and the broker (:mod:`worker.tasks`)."""
    from worker import tasks

    return tasks.build_intake(settings)


def build_watcher(settings: Settings, on_stable_files: OnStableFiles | None = None) -> InboxWatcher:
    """The production watcher; ``on_stable_files`` replaces the intake (``run`` wraps it to
    count what it quarantines). Once per process, at start-up: it freezes the heap built so
    far (``gc.freeze``)."""
    for folder in (settings.inbox_dir, settings.archive_dir, settings.quarantine_dir):
        folder.mkdir(parents=True, exist_ok=True)
    config = WatchConfig(
        inbox=settings.inbox_dir,
        mode=settings.watch_mode,
        poll_interval_s=settings.poll_interval_s,
        rescan_interval_s=settings.rescan_interval_s,
        quiet_period_s=settings.quiet_period_s,
        rehand_after_s=settings.requeue_after_s,
    )
    watcher = InboxWatcher(config, on_stable_files or build_intake(settings))
    # What is imported and wired by now lives as long as the process. Frozen, it is out of
    # the collector's sight: a full collection walked its ~250,000 objects, about 0.1 s of
    # the watcher's CPU every few bursts, for nothing to free.
    gc.freeze()
    return watcher


def worker_argv(
    settings: Settings,
    *,
    pool: str | None = None,
    concurrency: int | None = None,
    queues: str | None = None,
    hostname: str | None = None,
) -> list[str]:
    """Arguments for ``celery worker`` with the options this system relies on."""
    argv = [
        "worker",
        f"--pool={pool or 'prefork'}",
        f"--concurrency={concurrency or settings.worker_concurrency}",
        f"--queues={queues or ','.join(QUEUES)}",
        "--prefetch-multiplier=1",
        "--task-events",
        "--without-gossip",
        "--without-mingle",
        f"--loglevel={settings.log_level}",
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    return argv


def inbox_files(inbox: Path) -> Iterator[Path]:
    """Files the watcher would hand over (the same walk, depth limit included)."""
    return InboxWalk(inbox).files()


def is_idle(settings: Settings) -> bool:
    """No file waits in the inbox or in staging, no row is queued or processing, and (on the
    embedded broker) no task waits in its queue: the heatmap/SR/SC tasks run after all
    triage work, so an empty worklist queue alone would stop ``run`` before its results.
    A task a worker holds is finished by its warm shutdown."""
    if next(inbox_files(settings.inbox_dir), None) is not None:
        return False
    if any(path.is_file() for path in staging_dir(settings.inbox_dir).glob("*")):
        return False
    queue = settings.broker_folder / "queue"
    if settings.broker.startswith("filesystem://") and any(queue.glob("*")):
        return False
    with get_session_factory()() as session:
        waiting = session.scalar(
            select(func.count())
            .select_from(WorklistEntry)
            .where(WorklistEntry.status.in_(list(WAITING_STATUSES)))
        )
    return not waiting


def stop_on_signals(stop: threading.Event) -> None:
    """SIGINT (Ctrl-C) and SIGTERM (docker stop) end the service cleanly."""

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d received; stopping", signum)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def configure_logging(level: str, log_file: Path | None = None) -> None:
    """Log to stderr (or append to ``log_file``) at ``level``, through the PHI guard
    (:mod:`worker.phi_logging`). With a file, Python warnings go there too: the terminal is
    left to ``run``'s progress line."""
    from worker.phi_logging import install_phi_guard

    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file, encoding="utf-8")
        logging.captureWarnings(True)
    logging.basicConfig(
        level=level.upper(),
        handlers=[handler],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    install_phi_guard()
