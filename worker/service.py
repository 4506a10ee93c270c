"""Long-running services wired from the settings: the watcher, and the worker's argv.

The CLI's ``watch``, ``worker`` and ``run`` commands are thin shells around these.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from db.models import WAITING_STATUSES, WorklistEntry
from ingest.staging import staging_dir
from ingest.watcher import InboxWalk, InboxWatcher, OnStableFiles, WatchConfig
from worker.celery_app import QUEUES
from worker.heartbeat import Heartbeat
from worker.intake import Intake
from worker.resources import get_session_factory
from worker.settings import Settings

if TYPE_CHECKING:
    from pacs.receiver import Receiver

log = logging.getLogger(__name__)

RECEIVING_FOLDER = ".cxr-receiving"  # pacs.receiving.RECEIVING_FOLDER (no pynetdicom here)


def build_intake(settings: Settings) -> Intake:
    """The watcher's callback, wired to the database and the broker (:mod:`worker.tasks`)."""
    from worker import tasks

    return tasks.build_intake(settings)


def build_watcher(settings: Settings, on_stable_files: OnStableFiles | None = None) -> InboxWatcher:
    """The production watcher; ``on_stable_files`` replaces the intake (``run`` wraps it to
    count what it quarantines). Once per process, at start-up: it freezes the heap built so
    far (``gc.freeze``)."""
    for folder in (settings.inbox, settings.archive, settings.quarantine):
        folder.mkdir(parents=True, exist_ok=True)
    config = WatchConfig(
        inbox=settings.inbox,
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


#: The watcher's longest legitimate pass beyond a rescan interval (a rescan of a large share).
WATCHER_STALE_S = 600.0


def watcher_heartbeat(settings: Settings) -> Heartbeat:
    """The ``watch`` service's heartbeat (``cxr-triage status --alive watcher``)."""
    return Heartbeat(settings.data_dir, "watcher", WATCHER_STALE_S + settings.rescan_interval_s)


def deliver_heartbeat(settings: Settings) -> Heartbeat:
    """The ``deliver`` service's heartbeat: a pass may take as long as a batch's claim lease,
    every object waiting out the PACS timeout (:meth:`pacs.delivery.Deliverer.lease`)."""
    slowest = settings.pacs_timeout_s * (settings.results_batch_size + 3)
    return Heartbeat(settings.data_dir, "deliver", slowest + 60.0)


#: Beside the worklist in the data folder: the inbox the last ``run``/``watch`` watched, so
#: that ``listen`` started on its own receives into it (issues 19 and 21: the README's
#: ``run ./inbox`` and a bare ``listen`` used to use two different folders).
WATCHED_INBOX_RECORD = "watched-inbox"


def record_watched_inbox(settings: Settings) -> None:
    """Note, in the data folder, which inbox this watcher watches (best effort)."""
    record = settings.data_dir / WATCHED_INBOX_RECORD
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        temporary = record.with_name(f".{record.name}.{os.getpid()}")
        temporary.write_text(str(settings.inbox) + "\n", encoding="utf-8")
        temporary.replace(record)
    except OSError as error:
        log.warning("cannot record the watched inbox: %s", error.strerror)


def receiving_inbox(settings: Settings) -> Path:
    """The inbox ``listen`` receives into: CXR_INBOX (or a command's INBOX) when set, else
    the inbox the last ``run``/``watch`` of this data folder watched, else the default."""
    if settings.inbox_configured:
        return settings.inbox
    try:
        recorded = (settings.data_dir / WATCHED_INBOX_RECORD).read_text(encoding="utf-8")
    except (OSError, UnicodeError):
        return settings.inbox
    path = Path(recorded.strip())
    return path if path.is_absolute() and path.is_dir() else settings.inbox


def build_receiver(
    settings: Settings,
    inbox: Path,
    *,
    port: int | None = None,
    ae_title: str | None = None,
    on_received: Callable[[Path], None] | None = None,
) -> Receiver:
    """The DICOM node from the settings (``port``/``ae_title`` override them). Raises
    ValueError for a setting it cannot use (the CLI shows it)."""
    from pacs.peers import parse_peers
    from pacs.receiver import NetworkLimits, Receiver, ReceiverConfig, TLSFiles

    if settings.listen_allowed_ae_titles.strip():
        raise ValueError(
            "CXR_LISTEN_ALLOWED_AE_TITLES is replaced by CXR_LISTEN_PEERS, which binds each "
            "calling AE title to its host: e.g. CXR_LISTEN_PEERS='MODALITY@10.20.0.15'"
        )
    tls = None
    if settings.listen_tls_certificate is not None and settings.listen_tls_key is not None:
        tls = TLSFiles(
            settings.listen_tls_certificate, settings.listen_tls_key, settings.listen_tls_ca
        )
    config = ReceiverConfig(
        inbox=inbox,
        ae_title=ae_title or settings.listen_ae_title,
        port=settings.listen_port if port is None else port,
        host=settings.listen_host,
        peers=parse_peers(settings.listen_peers, allow_any=settings.listen_allow_any_peer),
        max_object_bytes=settings.listen_max_object_bytes,
        limits=NetworkLimits(
            max_pdu_bytes=settings.listen_max_pdu_bytes,
            pdu_timeout_s=settings.listen_pdu_timeout_s,
            max_associations=settings.listen_max_associations,
            max_associations_per_peer=settings.listen_max_associations_per_peer,
        ),
        acse_timeout_s=settings.listen_acse_timeout_s,
        idle_timeout_s=settings.listen_idle_timeout_s,
        file_mode=settings.file_mode,
        tls=tls,
    )
    return Receiver(config, on_received)


def run_watcher(
    settings: Settings, stop: threading.Event, beat: Callable[[], None] = lambda: None
) -> None:
    """``cxr-triage watch``: the watcher, active in one process per share at a time.

    Every process started stands by until it holds the watcher lease
    (:mod:`worker.leadership`), then watches until it loses the lease or is stopped; a new
    term starts a new watcher, whose start-up rescan finds what arrived meanwhile. ``beat``
    is the service's heartbeat: the watcher's loop beats, and so does a standby's wait."""
    from worker.leadership import Leadership

    def watch(term_stop: threading.Event) -> None:
        build_watcher(settings).run(term_stop, beat)

    Leadership(get_session_factory(), settings.watcher_lease_s).run(watch, stop, beat)


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


def folders_too_deep(inbox: Path) -> int:
    """Folders the watcher does not enter (past the depth limit): their files stay unread."""
    walk = InboxWalk(inbox)
    for _ in walk.files():
        pass
    return walk.too_deep


def is_idle(settings: Settings) -> bool:
    """No file waits in the inbox or in staging, no row is queued or processing, and (on the
    embedded broker) no task waits in its queue: the heatmap/SR/SC tasks run after all
    triage work, so an empty worklist queue alone would stop ``run`` before its results.
    A task a worker holds is finished by its warm shutdown."""
    if next(inbox_files(settings.inbox), None) is not None:
        return False
    if any(path.is_file() for path in staging_dir(settings.inbox).glob("*")):
        return False
    if any((settings.inbox / RECEIVING_FOLDER).glob("*/*.part")):
        return False  # a C-STORE is arriving (run --listen)
    queue = settings.broker_folder / "queue"
    if settings.broker_url.startswith("filesystem://") and any(queue.glob("*")):
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
