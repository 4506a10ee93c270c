"""The inbox watcher: a file is handed over once, only after its copy has finished."""

from __future__ import annotations

import os
import queue
import threading
import time
from pathlib import Path

import pytest

from ingest.watcher import (
    HANDOVER_BATCH,
    InboxWatcher,
    Origin,
    StabilityTracker,
    WatchConfig,
    is_ignored,
)
from tests.support import wait_until


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_temporary_and_hidden_names_are_ignored(tmp_path: Path) -> None:
    for name in ("a.part", "b.TMP", ".c.dcm", "d.crdownload", "e~", ".hidden/f.dcm"):
        assert is_ignored(tmp_path / name, tmp_path), name
    assert not is_ignored(tmp_path / "study" / "img.dcm", tmp_path)
    assert is_ignored(tmp_path.parent / "outside.dcm", tmp_path)


def test_a_file_is_ready_only_after_the_quiet_period(tmp_path: Path) -> None:
    clock = Clock()
    tracker = StabilityTracker(quiet_period_s=2.0, rehand_after_s=100.0, clock=clock)
    path = tmp_path / "x.dcm"
    path.write_bytes(b"a")
    tracker.observe(path, Origin.LIVE)
    clock.now += 1.5
    assert tracker.ready() == []
    with path.open("ab") as stream:  # still being written: the clock starts again
        stream.write(b"b")
    clock.now += 0.1
    assert tracker.ready() == []
    clock.now += 1.95
    assert tracker.ready() == []
    clock.now += 0.1
    assert tracker.ready() == [(path, Origin.LIVE)]
    tracker.observe(path, Origin.LIVE)  # handed and unchanged: not again
    clock.now += 10
    assert tracker.ready() == []


def test_stable_files_are_handed_over_oldest_written_first(tmp_path: Path) -> None:
    """A scan finds files in the folder's order; the intake must see them in the order they
    were written (of two objects under one SOP Instance UID, the first gets the row)."""
    clock = Clock()
    tracker = StabilityTracker(quiet_period_s=1.0, rehand_after_s=100.0, clock=clock)
    names = ["uid-1.dcm", "uid.dcm", "other.dcm"]  # found in this order
    for name, written_s in zip(names, (1_700_000_300, 1_700_000_100, 1_700_000_200), strict=True):
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, ns=(written_s * 10**9, written_s * 10**9))
        tracker.observe(tmp_path / name, Origin.BACKFILL)
    clock.now += 1.5
    assert [p.name for p, _ in tracker.ready()] == ["uid.dcm", "other.dcm", "uid-1.dcm"]


def test_a_handed_file_still_present_is_handed_again_after_the_rehand_time(
    tmp_path: Path,
) -> None:
    clock = Clock()
    tracker = StabilityTracker(quiet_period_s=0.0, rehand_after_s=60.0, clock=clock)
    path = tmp_path / "x.dcm"
    path.write_bytes(b"a")
    tracker.observe(path, Origin.BACKFILL)
    assert tracker.ready() == [(path, Origin.BACKFILL)]
    clock.now += 59
    tracker.observe(path, Origin.LIVE)
    assert tracker.ready() == []
    clock.now += 2
    tracker.observe(path, Origin.LIVE)
    assert tracker.ready() == [(path, Origin.LIVE)]


def test_a_vanished_candidate_is_dropped(tmp_path: Path) -> None:
    clock = Clock()
    tracker = StabilityTracker(quiet_period_s=1.0, rehand_after_s=60.0, clock=clock)
    path = tmp_path / "x.dcm"
    path.write_bytes(b"a")
    tracker.observe(path, Origin.LIVE)
    path.unlink()
    clock.now += 5
    assert tracker.ready() == [] and tracker.pending == 0


def test_with_events_a_candidate_is_looked_at_only_once_its_quiet_period_could_end(
    tmp_path: Path,
) -> None:
    """inotify reports writes as events: a burst's candidates are not ``lstat``-ed on every
    tick. A change whose event was lost is still seen at the end of the quiet period, and
    starts it again."""
    clock = Clock()
    tracker = StabilityTracker(
        quiet_period_s=2.0, rehand_after_s=100.0, clock=clock, events_report_changes=True
    )
    path, gone = tmp_path / "x.dcm", tmp_path / "gone.dcm"
    for file in (path, gone):
        file.write_bytes(b"a")
        tracker.observe(file, Origin.LIVE)
    clock.now += 1.0
    with path.open("ab") as stream:  # written, its event lost
        stream.write(b"b")
    gone.unlink()  # its event lost too
    clock.now += 0.5
    assert tracker.ready() == []
    assert tracker.pending == 2  # neither looked at before its quiet period could end
    clock.now += 0.5
    assert tracker.ready() == []  # looked at: x changed, so its quiet period starts again
    assert tracker.pending == 1  # and gone.dcm is dropped
    clock.now += 1.9
    assert tracker.ready() == []
    clock.now += 0.1
    assert tracker.ready() == [(path, Origin.LIVE)]


def test_with_events_a_file_seen_changing_is_looked_at_on_every_tick(tmp_path: Path) -> None:
    """Once a look sees a change, the next ticks look too (as without events), so a file
    whose writes end is ready one quiet period after the last change seen, not two."""
    clock = Clock()
    tracker = StabilityTracker(
        quiet_period_s=2.0, rehand_after_s=100.0, clock=clock, events_report_changes=True
    )
    path = tmp_path / "x.dcm"
    path.write_bytes(b"a")
    tracker.observe(path, Origin.LIVE)
    path.write_bytes(b"ab")  # no event
    clock.now += 2.0
    assert tracker.ready() == []  # the change is seen: the period starts again at 1002.0
    path.write_bytes(b"abc")  # the last write, no event
    clock.now += 0.25
    assert tracker.ready() == []  # seen on the next tick: the period starts at 1002.25
    clock.now += 0.25
    assert tracker.ready() == []  # unchanged: looked at again when the period can end
    clock.now += 1.75
    assert tracker.ready() == [(path, Origin.LIVE)]  # 1004.25: 2 s after the last change


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Path, Origin, int]] = []
        self.lock = threading.Lock()

    def __call__(self, files: list[tuple[Path, Origin]]) -> list[Path]:
        with self.lock:
            self.calls.extend((path, origin, path.stat().st_size) for path, origin in files)
        return []


def _run(watcher: InboxWatcher) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,))
    thread.start()
    return stop, thread


@pytest.mark.parametrize("mode", ["inotify", "polling"])
def test_a_slowly_written_file_is_handed_once_complete(tmp_path: Path, mode: str) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "old.dcm").write_bytes(b"there before the watcher started")
    recorder = Recorder()
    config = WatchConfig(
        inbox, mode=mode, poll_interval_s=0.2, rescan_interval_s=30, quiet_period_s=0.6
    )  # type: ignore[arg-type]
    stop, thread = _run(InboxWatcher(config, recorder))
    try:
        wait_until(lambda: len(recorder.calls) == 1)
        assert recorder.calls[0][:2] == (inbox / "old.dcm", Origin.BACKFILL)
        sub = inbox / "study1"
        sub.mkdir()
        target = sub / "slow.dcm"
        with target.open("wb") as stream:
            for _ in range(6):  # 6 chunks, 0.25 s apart: never quiet for 0.6 s
                stream.write(b"x" * 1000)
                stream.flush()
                time.sleep(0.25)
        (inbox / "ignored.part").write_bytes(b"partial")
        wait_until(lambda: len(recorder.calls) == 2)
        time.sleep(1.0)
        assert recorder.calls[1] == (target, Origin.LIVE, 6000)
        assert len(recorder.calls) == 2
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()


def test_a_failed_hand_over_is_retried_and_the_watcher_survives(
    tmp_path: Path,
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    attempts: list[Path] = []

    def flaky(files: list[tuple[Path, Origin]]) -> list[Path]:
        attempts.extend(path for path, _ in files)
        if len(attempts) == 1:
            raise ConnectionError("database down")
        return []

    watcher = InboxWatcher(WatchConfig(inbox, rescan_interval_s=0.5, quiet_period_s=0.1), flaky)
    watcher.CALLBACK_RETRY_S = 0.3  # type: ignore[misc]
    stop, thread = _run(watcher)
    try:
        time.sleep(0.3)
        # A file renamed into the inbox; the first hand-over fails (database down) and the
        # watcher must try again instead of dying or forgetting the file.
        outside = tmp_path / "staged.dcm"
        outside.write_bytes(b"data")
        os.rename(outside, inbox / "staged.dcm")
        wait_until(lambda: len(attempts) >= 1)
        wait_until(lambda: len(attempts) >= 2, timeout_s=5)  # retried after the failure
        assert attempts[0] == attempts[1] == inbox / "staged.dcm"
    finally:
        stop.set()
        thread.join(10)


def test_the_periodic_rescan_finds_what_the_events_missed(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    recorder = Recorder()
    watcher = InboxWatcher(WatchConfig(inbox, rescan_interval_s=0.5, quiet_period_s=0.1), recorder)
    watcher._drain_events = lambda: None  # type: ignore[method-assign]  # events lost (SMB)
    stop, thread = _run(watcher)
    try:
        time.sleep(0.2)
        (inbox / "late.dcm").write_bytes(b"data")
        wait_until(lambda: len(recorder.calls) == 1, timeout_s=5)
        assert recorder.calls[0][:2] == (inbox / "late.dcm", Origin.LIVE)
    finally:
        stop.set()
        thread.join(10)


def test_a_burst_is_handed_over_in_batches_each_file_once(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for n in range(HANDOVER_BATCH * 2 + 5):
        (inbox / f"{n:03d}.dcm").write_bytes(b"x")
    batches: list[list[Path]] = []

    def record(files: list[tuple[Path, Origin]]) -> list[Path]:
        batches.append([path for path, _ in files])
        return []

    watcher = InboxWatcher(WatchConfig(inbox, quiet_period_s=0.0), record)
    watcher.rescan(Origin.BACKFILL)
    assert watcher.hand_over_ready() == HANDOVER_BATCH * 2 + 5
    assert [len(batch) for batch in batches] == [HANDOVER_BATCH, HANDOVER_BATCH, 5]
    handed = [path for batch in batches for path in batch]
    assert sorted(handed) == sorted(inbox.iterdir())
    watcher.rescan(Origin.LIVE)
    assert watcher.hand_over_ready() == 0  # handed and unchanged: not again


def test_only_the_files_the_callback_returns_are_handed_again(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in ("ok.dcm", "locked.dcm"):
        (inbox / name).write_bytes(b"x")
    clock = Clock()
    calls: list[set[str]] = []

    def record(files: list[tuple[Path, Origin]]) -> list[Path]:
        calls.append({path.name for path, _ in files})
        return [path for path, _ in files if path.name == "locked.dcm"]

    watcher = InboxWatcher(WatchConfig(inbox, quiet_period_s=0.0), record, clock=clock)
    watcher.rescan(Origin.BACKFILL)
    assert watcher.hand_over_ready() == 1
    clock.now += watcher.CALLBACK_RETRY_S + 1
    watcher.rescan(Origin.LIVE)
    watcher.hand_over_ready()
    assert calls == [{"ok.dcm", "locked.dcm"}, {"locked.dcm"}]


def test_a_file_that_breaks_its_batch_holds_up_only_itself(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in ("a.dcm", "poison.dcm", "b.dcm"):
        (inbox / name).write_bytes(b"x")
    clock = Clock()
    taken: list[str] = []

    def admit(files: list[tuple[Path, Origin]]) -> list[Path]:
        if any(path.name == "poison.dcm" for path, _ in files):
            raise ValueError("a value the database refuses")  # the whole transaction fails
        taken.extend(path.name for path, _ in files)
        return []

    watcher = InboxWatcher(WatchConfig(inbox, quiet_period_s=0.0), admit, clock=clock)
    watcher.rescan(Origin.BACKFILL)
    assert watcher.hand_over_ready() == 2
    assert sorted(taken) == ["a.dcm", "b.dcm"]
    clock.now += watcher.CALLBACK_RETRY_S + 1
    watcher.rescan(Origin.LIVE)
    assert watcher.hand_over_ready() == 0  # the poison file alone is tried again
    assert sorted(taken) == ["a.dcm", "b.dcm"]
    assert watcher.tracker.handed.keys() == {inbox / n for n in ("a.dcm", "poison.dcm", "b.dcm")}


def test_reads_bring_no_event_every_change_does(tmp_path: Path) -> None:
    """The intake reads each file and the worker its staged copy: with opens and reads as
    events, every read came back through the observer's threads, for nothing to do. What
    changes a file (written, moved, mtime set, deleted) must still arrive."""
    inbox = tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)
    for name in ("read.dcm", "touched.dcm", "moved.dcm", "deleted.dcm"):
        (inbox / name).write_bytes(b"x")
    watcher = InboxWatcher(WatchConfig(inbox), Recorder())
    observer = watcher._start_observer()
    assert observer is not None
    try:
        for _ in range(5):
            (inbox / "read.dcm").read_bytes()
        (inbox / "written.dcm").write_bytes(b"y")
        os.utime(inbox / "touched.dcm", ns=(1, 1))
        (inbox / "moved.dcm").rename(inbox / "sub" / "moved.dcm")
        (inbox / "deleted.dcm").unlink()
        (inbox / "last.dcm").write_bytes(b"z")  # events arrive in order: this one last
        seen: set[Path] = set()
        deadline = time.monotonic() + 10
        while inbox / "last.dcm" not in seen and time.monotonic() < deadline:
            try:
                seen.add(watcher._events.get(timeout=0.1))
            except queue.Empty:
                continue
    finally:
        observer.stop()
        observer.join(timeout=5)
    expected = {"written.dcm", "touched.dcm", "moved.dcm", "sub/moved.dcm", "deleted.dcm"}
    assert {inbox / name for name in expected} <= seen
    assert inbox / "read.dcm" not in seen


def test_a_file_its_writer_vouches_for_skips_the_quiet_period_and_only_that_one(
    tmp_path: Path,
) -> None:
    """``admit_complete`` (the DICOM receiver inside ``run``, which wrote the file and renamed
    it into place): handed within a tick. A file on the share with the same kind of name,
    whoever wrote it, still waits out the quiet period: only code in the process vouches."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    recorder = Recorder()
    config = WatchConfig(inbox, rescan_interval_s=60, quiet_period_s=30)
    watcher = InboxWatcher(config, recorder)
    stop, thread = _run(watcher)
    try:
        received = inbox / "1.2.826.0.1.3680043.8.498.1.dcm"
        received.write_bytes(b"written and renamed by the receiver")
        from_share = inbox / "1.2.826.0.1.3680043.8.498.2.dcm"
        from_share.write_bytes(b"copied onto the share")
        started = time.monotonic()
        watcher.admit_complete(received)
        wait_until(lambda: len(recorder.calls) == 1, 5)
        assert time.monotonic() - started < 1.0
        assert recorder.calls[0][:2] == (received, Origin.LIVE)
        time.sleep(1.5)  # its creation and close events came meanwhile: not handed again
        assert len(recorder.calls) == 1
        watcher.admit_complete(inbox / ".cxr-receiving" / "x.part")  # never a hidden file
        time.sleep(0.5)
        assert len(recorder.calls) == 1
    finally:
        stop.set()
        thread.join(10)
