"""The watcher's and deliver's health checks read a heartbeat their loop writes: alive while
the loop passes and its process lives, not alive when it is gone or stuck (issue 21: the
checks only asked the database)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from db import migrate
from ingest.watcher import InboxWatcher, WatchConfig
from tests.processes import CLI, running, service_env
from tests.support import wait_until
from worker.heartbeat import BEAT_EVERY_S, Heartbeat, check, heartbeat_file


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_alive_while_it_beats_and_stuck_once_it_stops(tmp_path: Path) -> None:
    clock = Clock()
    beat = Heartbeat(tmp_path, "watcher", stale_after_s=60, clock=clock)
    assert not check(tmp_path, "watcher", clock).alive  # never started
    beat()
    assert check(tmp_path, "watcher", clock).alive
    written = heartbeat_file(tmp_path, "watcher").stat().st_mtime_ns
    clock.now += BEAT_EVERY_S / 2
    beat()  # too soon to write again: a loop passes many times a second
    assert heartbeat_file(tmp_path, "watcher").stat().st_mtime_ns == written
    clock.now += 61
    stuck = check(tmp_path, "watcher", clock)
    assert not stuck.alive and "stuck" in stuck.reason
    beat()
    assert check(tmp_path, "watcher", clock).alive
    beat.stop()
    assert not check(tmp_path, "watcher", clock).alive


def test_a_heartbeat_left_by_a_dead_process_does_not_count(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])  # a pid that has exited
    dead.wait()
    Heartbeat(tmp_path, "deliver", stale_after_s=600)()
    path = heartbeat_file(tmp_path, "deliver")
    path.write_text(path.read_text().replace(f'"pid": {os.getpid()}', f'"pid": {dead.pid}'))
    liveness = check(tmp_path, "deliver")
    assert not liveness.alive and "gone" in liveness.reason


@pytest.mark.parametrize(
    "content", ["", "not json", "[]", '{"pid": "x", "at": 1, "stale_after_s": 9}', '{"pid": 1}']
)
def test_a_damaged_heartbeat_is_not_alive_and_not_a_crash(tmp_path: Path, content: str) -> None:
    path = heartbeat_file(tmp_path, "watcher")
    path.parent.mkdir(parents=True)
    path.write_text(content)
    assert not check(tmp_path, "watcher").alive


def test_the_watch_loop_beats_on_every_pass(tmp_path: Path) -> None:
    beats: list[int] = []
    watcher = InboxWatcher(
        WatchConfig(inbox=tmp_path / "inbox", mode="polling", quiet_period_s=0.2),
        lambda files: [],
    )
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop, lambda: beats.append(1)))
    thread.start()
    try:
        wait_until(lambda: len(beats) >= 5, 10, "five passes")
    finally:
        stop.set()
        thread.join(10)


def test_the_watch_service_is_alive_until_its_process_is_gone(tmp_path: Path) -> None:
    """The compose health check, ``cxr-triage status --alive watcher``, on the real service."""
    url = f"sqlite:///{tmp_path / 'worklist.sqlite3'}"
    env = service_env(tmp_path, url, None)
    migrate.upgrade(url)

    def alive() -> int:
        done = subprocess.run(
            [*CLI, "status", "--alive", "watcher"], env=env, capture_output=True, timeout=60
        )
        return done.returncode

    log = tmp_path / "watch.log"
    with running(["watch"], env, log) as process:
        wait_until(lambda: alive() == 0, 60, "the watcher's heartbeat", [log])
        os.killpg(process.pid, signal.SIGKILL)  # no clean exit: the heartbeat file stays
        process.wait(timeout=30)
        assert heartbeat_file(tmp_path / "data", "watcher").exists()
        assert alive() == 1
