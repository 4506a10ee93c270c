"""Watch an inbox folder and report each file once its copy has finished.

Events (inotify locally, polling for SMB/NFS shares, through watchdog) only make discovery
fast; a full rescan at start-up and every ``rescan_interval_s`` is the source of truth, so
files that arrived while the watcher was down, or whose events a share swallowed, are found.

A file is handed over when its size and mtime have not changed for ``quiet_period_s``; the
files that became stable together go to ``on_stable_files`` in batches of up to
:data:`HANDOVER_BATCH` (a burst of exports is admitted in a few transactions, not one
each). Temporary names that senders rename later (``*.part``, ``*.tmp``, dot-files) are
ignored. A file still in the inbox ``rehand_after_s`` after it was handed is
handed again: the callback is idempotent and decides whether anything is left to do (a lost
task, a crash between the database commit and the move).

This module knows nothing of databases or Celery: the worker layer supplies the callback.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal

from watchdog.events import (
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from ingest.limits import MAX_FOLDER_DEPTH

log = logging.getLogger(__name__)

TEMPORARY_SUFFIXES = (".part", ".partial", ".tmp", ".temp", ".crdownload", ".filepart", "~")
EMPTY_FOLDER_GRACE_S = 300.0


class Origin(StrEnum):
    """How a file was found; the worker routes live arrivals ahead of a backlog."""

    LIVE = "live"  # an event, or a periodic rescan while running
    BACKFILL = "backfill"  # the start-up rescan: files that arrived while the watcher was down


HANDOVER_BATCH = 64

#: The events that can change what the tracker knows of a file: it appears, is written, has
#: its mtime set, leaves. Not opens or reads (watchdog's default includes them): every read
#: of a file in the inbox, the intake's and the worker's of its staged copy, came back as
#: events through two threads, several per file, for nothing to do.
WATCHED_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
]

#: Takes a batch of stable files; returns those to hand again after CALLBACK_RETRY_S (a file
#: that could not be read yet). Raising means the whole batch is handed again then.
OnStableFiles = Callable[[list[tuple[Path, Origin]]], Collection[Path]]


@dataclass(frozen=True)
class WatchConfig:
    inbox: Path
    mode: Literal["inotify", "polling"] = "inotify"
    poll_interval_s: float = 2.0
    rescan_interval_s: float = 60.0
    quiet_period_s: float = 2.0
    rehand_after_s: float = 900.0

    def __post_init__(self) -> None:
        if self.quiet_period_s < 0 or self.poll_interval_s <= 0 or self.rescan_interval_s <= 0:
            raise ValueError("watch intervals must be positive")


def is_ignored(path: Path, inbox: Path) -> bool:
    """Temporary or hidden: a dot anywhere in the path below the inbox, or a temp suffix."""
    try:
        parts = path.relative_to(inbox).parts
    except ValueError:
        return True  # not below the inbox at all
    if not parts or any(part.startswith(".") for part in parts):
        return True
    return parts[-1].lower().endswith(TEMPORARY_SUFFIXES)


class InboxWalk:
    """One iterative walk of the inbox, never following symlinks, at most ``max_depth``
    folders deep.

    Recursion (``os.walk`` before Python 3.12, a recursive generator) dies with
    RecursionError on a tree about 1,000 folders deep, and so did the watcher at every start
    (issue 12). Folders deeper than ``max_depth`` are not entered; they are counted in
    ``too_deep`` for a log line that names none of them (folder names can be patient names).
    """

    def __init__(self, inbox: Path, max_depth: int = MAX_FOLDER_DEPTH) -> None:
        self.inbox = inbox
        self.max_depth = max_depth
        self.too_deep = 0
        self.folders: list[Path] = []  # pre-order: every folder after its parent

    def files(self) -> Iterator[Path]:
        """Regular files, symlinks and specials (for the callback to quarantine), not ignored."""
        stack: list[tuple[Path, int]] = [(self.inbox, 0)]
        while stack:
            folder, depth = stack.pop()
            self.folders.append(folder)
            try:
                entries = list(os.scandir(folder))
            except OSError as error:
                log.warning("cannot list a folder in the inbox: %s", error.strerror)
                continue
            for entry in entries:
                path = Path(entry.path)
                if is_ignored(path, self.inbox):
                    continue
                if not entry.is_dir(follow_symlinks=False):
                    yield path
                elif depth < self.max_depth:
                    stack.append((path, depth + 1))
                else:
                    self.too_deep += 1


@dataclass
class _Candidate:
    size: int
    mtime_ns: int
    unchanged_since: float
    origin: Origin
    changing: bool = False  # the last look saw a change: look again on every tick


@dataclass
class _Handed:
    size: int
    mtime_ns: int
    handed_at: float


class StabilityTracker:
    """Which files are still being written and which are ready; pure bookkeeping over ``lstat``.

    A file is ready when its size and mtime, looked at again, are those it had at least
    ``quiet_period_s`` before, and no look in between saw them change. Without events
    (``events_report_changes`` False: polling, or no observer) every candidate is looked at
    on every tick. With an observer that reports every write (inotify), a change comes as
    an event (:meth:`observe`), so a candidate is looked at when its quiet period has passed,
    and then on every tick for as long as looks keep seeing changes: a burst of N files cost
    N ``lstat`` calls a tick for nothing. The look at the end of the quiet period still
    compares with the start, so a change whose event was lost restarts the period.

    Not thread-safe: one thread (the watcher loop) calls it.
    """

    def __init__(
        self,
        quiet_period_s: float,
        rehand_after_s: float,
        clock: Callable[[], float],
        *,
        events_report_changes: bool = False,
    ) -> None:
        self.quiet_period_s = quiet_period_s
        self.rehand_after_s = rehand_after_s
        self.clock = clock
        self.events_report_changes = events_report_changes
        self.candidates: dict[Path, _Candidate] = {}
        self.handed: dict[Path, _Handed] = {}

    def observe(self, path: Path, origin: Origin) -> None:
        """Note that ``path`` exists or changed; it becomes a candidate unless already handed
        and unchanged (and not yet due to be handed again)."""
        stat = _lstat(path)
        if stat is None:
            self.candidates.pop(path, None)
            self.handed.pop(path, None)
            return
        now = self.clock()
        size, mtime_ns = stat
        handed = self.handed.get(path)
        if handed is not None:
            unchanged = (handed.size, handed.mtime_ns) == (size, mtime_ns)
            if unchanged and now - handed.handed_at < self.rehand_after_s:
                return
            del self.handed[path]
        candidate = self.candidates.get(path)
        if candidate is None:
            self.candidates[path] = _Candidate(size, mtime_ns, now, origin)
        elif (candidate.size, candidate.mtime_ns) != (size, mtime_ns):
            candidate.size, candidate.mtime_ns, candidate.unchanged_since = size, mtime_ns, now
            candidate.changing = True

    def ready(self) -> list[tuple[Path, Origin]]:
        """Candidates unchanged for the quiet period, oldest first; they move to ``handed``.

        Oldest by modification time, not by the order the files were found: a scan lists a
        folder in the file system's order, and when two files carry one SOP Instance UID the
        first handed over gets the row (the other is quarantined as its duplicate), so the
        one written first must be handed first (files of one mtime keep the order found)."""
        now = self.clock()
        stable: list[tuple[Path, Origin]] = []
        written_at: dict[Path, int] = {}
        for path, candidate in list(self.candidates.items()):
            quiet = now - candidate.unchanged_since >= self.quiet_period_s
            if self.events_report_changes and not (quiet or candidate.changing):
                continue  # a change meanwhile comes as an event; the look at the end checks
            stat = _lstat(path)
            if stat is None:
                del self.candidates[path]
                continue
            if stat != (candidate.size, candidate.mtime_ns):
                candidate.size, candidate.mtime_ns = stat
                candidate.unchanged_since = now
                candidate.changing = True
                continue
            candidate.changing = False
            if quiet:
                del self.candidates[path]
                self.handed[path] = _Handed(candidate.size, candidate.mtime_ns, now)
                stable.append((path, candidate.origin))
                written_at[path] = candidate.mtime_ns
        return sorted(stable, key=lambda item: written_at[item[0]])

    def mark_handed(self, path: Path) -> bool:
        """``path`` is handed over now, without a quiet period (its writer vouches that it
        is complete); False when it is gone already."""
        stat = _lstat(path)
        if stat is None:
            return False
        self.candidates.pop(path, None)
        self.handed[path] = _Handed(stat[0], stat[1], self.clock())
        return True

    def retry_later(self, path: Path, delay_s: float) -> None:
        """The callback failed: hand ``path`` again after ``delay_s`` instead of the full wait."""
        handed = self.handed.get(path)
        if handed is not None:
            handed.handed_at = self.clock() - self.rehand_after_s + delay_s

    def forget_missing(self, present: set[Path]) -> None:
        for path in [p for p in self.handed if p not in present]:
            del self.handed[path]

    @property
    def pending(self) -> int:
        return len(self.candidates)


class InboxWatcher:
    """Run the observer, the stability checks and the periodic rescan until ``stop`` is set."""

    CALLBACK_RETRY_S = 10.0

    def __init__(
        self,
        config: WatchConfig,
        on_stable_files: OnStableFiles,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.inbox = config.inbox.resolve()
        self.on_stable_files = on_stable_files
        self.clock = clock
        self.tracker = StabilityTracker(config.quiet_period_s, config.rehand_after_s, clock)
        self._events: queue.SimpleQueue[Path] = queue.SimpleQueue()
        self._complete: queue.SimpleQueue[Path] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._too_deep = 0  # folders past the depth limit at the last rescan
        self._events_unavailable = False  # the last observer start failed

    def run(self, stop: threading.Event, beat: Callable[[], None] = lambda: None) -> None:
        """Watch until ``stop`` is set; ``beat`` is called once per pass of the loop (the
        service's heartbeat, which its health check reads)."""
        self.inbox.mkdir(parents=True, exist_ok=True)
        observer = self._start_observer()
        log.info("watching inbox (%s mode)", self.config.mode)
        try:
            self.rescan(Origin.BACKFILL)
            next_rescan = self.clock() + self.config.rescan_interval_s
            tick = min(0.25, max(self.config.quiet_period_s / 4, 0.05))
            beat()
            while not stop.is_set():
                self._wake.wait(tick)
                self._wake.clear()
                if stop.is_set():
                    break
                beat()
                self._hand_over_complete()
                self._drain_events()
                self.hand_over_ready()
                if observer is not None and not observer.is_alive():
                    log.warning("file system observer stopped; restarting it and rescanning")
                    observer = self._start_observer()
                    next_rescan = self.clock()
                if self.clock() >= next_rescan:
                    if observer is None:  # events unavailable: try again once per rescan
                        observer = self._start_observer()
                    self.rescan(Origin.LIVE)
                    next_rescan = self.clock() + self.config.rescan_interval_s
        finally:
            if observer is not None:
                observer.stop()
                observer.join(timeout=5)
            log.info("watcher stopped")

    def admit_complete(self, path: Path) -> None:
        """Hand ``path`` over at once, without its quiet period. Thread-safe.

        For a file this process itself wrote and renamed into the inbox (the DICOM receiver
        inside ``cxr-triage run``): complete by construction, so waiting for its size to
        settle only adds latency. Only code in this process can call it: a sender on the
        share cannot skip the quiet period by imitating the receiver's file names.
        """
        self._complete.put(path)
        self._wake.set()

    def _hand_over_complete(self) -> None:
        batch: list[tuple[Path, Origin]] = []
        while True:
            try:
                path = self._complete.get_nowait()
            except queue.Empty:
                break
            if not is_ignored(path, self.inbox) and self.tracker.mark_handed(path):
                batch.append((path, Origin.LIVE))
        for start in range(0, len(batch), HANDOVER_BATCH):
            self._hand_over(batch[start : start + HANDOVER_BATCH])

    def rescan(self, origin: Origin) -> int:
        """Walk the inbox (never following symlinks) and observe every file found."""
        present: set[Path] = set()
        walk = InboxWalk(self.inbox)
        for path in walk.files():
            present.add(path)
            self.tracker.observe(path, origin)
        self.tracker.forget_missing(present)
        if walk.too_deep != self._too_deep:
            self._too_deep = walk.too_deep
            if walk.too_deep:
                log.warning(
                    "%d folder(s) lie more than %d levels below the inbox and are not read; "
                    "move their files higher up to have them processed",
                    walk.too_deep,
                    walk.max_depth,
                )
        self._prune_empty_folders(walk.folders)
        return len(present)

    def hand_over_ready(self) -> int:
        """Hand every stable file over, in batches; returns how many were taken."""
        ready = self.tracker.ready()
        return sum(
            self._hand_over(ready[start : start + HANDOVER_BATCH])
            for start in range(0, len(ready), HANDOVER_BATCH)
        )

    def _hand_over(self, batch: list[tuple[Path, Origin]]) -> int:
        """Hand ``batch`` over; if it fails as a whole, each file alone, so that a file that
        breaks a batch (or its transaction) holds up only itself. Failed files are handed
        again after ``CALLBACK_RETRY_S``; the watcher outlives any file or outage."""
        try:
            again = set(self.on_stable_files(batch))
        except Exception as error:
            if len(batch) > 1:
                log.exception("handing over %d stable files failed; one by one now", len(batch))
                return sum(self._hand_over([item]) for item in batch)
            log.warning(
                "handing over a stable file failed (%s); retrying in %.0f s",
                type(error).__name__,
                self.CALLBACK_RETRY_S,
            )
            again = {batch[0][0]}
        for path in again:
            self.tracker.retry_later(path, self.CALLBACK_RETRY_S)
        return len(batch) - len(again)

    def _drain_events(self) -> None:
        while True:
            try:
                path = self._events.get_nowait()
            except queue.Empty:
                return
            if not is_ignored(path, self.inbox):
                self.tracker.observe(path, Origin.LIVE)

    def _start_observer(self) -> BaseObserver | None:
        """Start watchdog, or return None when it cannot start: watchdog walks the tree
        recursively (RecursionError on a very deep one) and inotify has a watch limit
        (OSError). The periodic rescan still finds every file, only later.

        Only inotify reports each write as it happens; without it the tracker looks at every
        candidate on every tick."""
        self.tracker.events_report_changes = False
        observer: BaseObserver
        if self.config.mode == "polling":
            observer = PollingObserver(timeout=self.config.poll_interval_s)
        else:
            observer = Observer()
        observer.daemon = True
        try:
            observer.schedule(
                _EventSink(self._events),
                str(self.inbox),
                recursive=True,
                event_filter=WATCHED_EVENTS,
            )
            observer.start()
        except (RecursionError, OSError) as error:
            log.log(
                logging.DEBUG if self._events_unavailable else logging.WARNING,
                "file system events unavailable (%s); files are found by the rescan every %.0f s",
                type(error).__name__,
                self.config.rescan_interval_s,
            )
            self._events_unavailable = True
            return None
        if self._events_unavailable:
            log.info("file system events available again")
            self._events_unavailable = False
        self.tracker.events_report_changes = self.config.mode == "inotify"
        return observer

    def _prune_empty_folders(self, folders: list[Path]) -> None:
        """Remove sub-folders of the inbox left empty by moved files (never the inbox).

        ``folders`` in walk (pre-)order; reversed, every folder comes after its children.
        """
        cutoff = time.time() - max(EMPTY_FOLDER_GRACE_S, self.config.rescan_interval_s)
        for folder in reversed(folders):
            if folder == self.inbox:
                continue
            try:
                if folder.lstat().st_mtime < cutoff:
                    folder.rmdir()  # fails, harmlessly, while anything is in it
            except OSError:
                continue


class _EventSink(FileSystemEventHandler):
    """Forward file paths from the observer thread to the watcher loop."""

    def __init__(self, sink: queue.SimpleQueue[Path]) -> None:
        self.sink = sink

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if raw:
                self.sink.put(Path(os.fsdecode(raw)))


def _lstat(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.lstat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns
