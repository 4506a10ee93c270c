"""A folder tree 1,100 levels deep in the inbox: the watcher lives on, in both modes.

Reproduces issue 12: the recursive walk (and watchdog's own, at observer start) died with
RecursionError at every start, a crash loop under compose with nothing ingested. The walk
is now iterative with a depth limit; files below it are skipped and counted in a log line
that names no folder; watchdog failing to start leaves the periodic rescan in charge.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.watcher import InboxWatcher, Origin, WatchConfig

DEPTH = 1_100
SECRET_FOLDER = "Doe^Jane"  # a folder name that is PHI: never logged


@pytest.fixture
def inbox(tmp_path: Path) -> Iterator[Path]:
    """The inbox, removed with ``rm -rf`` afterwards: pytest's own clean-up (shutil.rmtree)
    recurses and would die on the deep tree."""
    folder = tmp_path / "inbox"
    yield folder
    subprocess.run(["rm", "-rf", str(folder)], check=True, timeout=120)


def _deep_tree(inbox: Path, depth: int = DEPTH) -> Path:
    """``inbox/Doe^Jane/d/d/.../deep.dcm`` ``depth`` folders down (relative mkdir: a path
    that long passes PATH_MAX only if taken whole)."""
    inbox.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    try:
        os.chdir(inbox)
        os.mkdir(SECRET_FOLDER)
        os.chdir(SECRET_FOLDER)
        for _ in range(depth - 1):
            os.mkdir("d")
            os.chdir("d")
        Path("deep.dcm").write_bytes(b"deep")
    finally:
        os.chdir(cwd)
    return inbox


@pytest.mark.parametrize("mode", ["inotify", "polling"])
def test_a_1100_level_tree_does_not_stop_the_watcher(
    inbox: Path, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    _deep_tree(inbox)
    (inbox / "shallow").mkdir()
    (inbox / "shallow" / "a.dcm").write_bytes(b"a")
    handed: list[Path] = []
    config = WatchConfig(
        inbox=inbox, mode=mode, poll_interval_s=0.2, rescan_interval_s=1.0, quiet_period_s=0.2
    )

    def take(batch: list[tuple[Path, Origin]]) -> list[Path]:
        handed.extend(path for path, _ in batch)
        return []

    watcher = InboxWatcher(config, take)
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            watcher.run(stop)
        except BaseException as error:  # noqa: BLE001 - the test reports what killed it
            errors.append(error)

    caplog.set_level(logging.INFO, logger="ingest.watcher")
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not handed:
        time.sleep(0.1)
    (inbox / "later.dcm").write_bytes(b"later")  # found after the start: by events or rescan
    while time.monotonic() < deadline and len(handed) < 2:
        time.sleep(0.1)
    time.sleep(1.5)  # at least one more rescan
    alive = thread.is_alive()
    stop.set()
    thread.join(timeout=10)
    assert not errors, errors
    assert alive, "the watcher thread ended"
    assert sorted(p.name for p in handed) == ["a.dcm", "later.dcm"]
    messages = [record.getMessage() for record in caplog.records]
    warnings = [m for m in messages if "levels below the inbox" in m]
    assert sum("file system events unavailable" in m for m in messages) <= 1
    assert len(warnings) == 1, "one line while the count is unchanged, not one per rescan"
    assert "more than 64 levels" in warnings[0]
    assert all(SECRET_FOLDER not in m for m in messages)
    assert all("RecursionError" not in (r.exc_text or "") for r in caplog.records)


def test_the_idle_check_walks_the_same_bounded_tree(inbox: Path) -> None:
    """``run --exit-when-idle`` asks ``inbox_files``: it must neither crash nor wait for ever
    on a file it will never be handed."""
    from worker.service import inbox_files

    _deep_tree(inbox)
    assert list(inbox_files(inbox)) == []
    (inbox / "x.dcm").write_bytes(b"x")
    assert [p.name for p in inbox_files(inbox)] == ["x.dcm"]


def test_files_down_to_the_depth_limit_are_found(tmp_path: Path) -> None:
    from ingest.limits import MAX_FOLDER_DEPTH
    from ingest.watcher import InboxWalk

    inbox = tmp_path / "inbox"
    folder = inbox.joinpath(*["d"] * MAX_FOLDER_DEPTH)
    folder.mkdir(parents=True)
    (folder / "at-limit.dcm").write_bytes(b"x")
    (folder / "d").mkdir()
    (folder / "d" / "below-limit.dcm").write_bytes(b"x")
    walk = InboxWalk(inbox)
    assert [p.name for p in walk.files()] == ["at-limit.dcm"]
    assert walk.too_deep == 1


def test_the_walk_never_follows_a_folder_symlink(tmp_path: Path) -> None:
    from ingest.watcher import InboxWalk

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.dcm").write_bytes(b"s")
    (inbox / "loop").symlink_to(inbox)
    (inbox / "out").symlink_to(outside)
    names = sorted(p.name for p in InboxWalk(inbox).files())
    assert names == ["loop", "out"]  # handed as links, for the callback to quarantine unread
