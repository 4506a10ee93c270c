"""Scenario 4: the share drops (the inbox is renamed away and back, as an unmount looks to a
polling watcher) and the watcher process is killed and restarted while files arrive.

Events are lost in both cases; the periodic and start-up rescans find every file.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from db.models import Status
from tests.reliability.stack import Stack, small_pngs
from tests.support import wait_until
from tests.support.servers import PrivateRedis

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.tf, pytest.mark.timeout(420)]


def test_share_drop_and_watcher_restart_lose_no_file(
    tmp_path: Path, pg_url: str, private_redis: PrivateRedis, model_dir: Path
) -> None:
    stack = Stack(
        tmp_path,
        pg_url,
        private_redis.url,
        model_dir,
        CXR_WATCH_MODE="polling",
        CXR_POLL_INTERVAL_S="0.5",
        CXR_RESCAN_INTERVAL_S="3",
    )
    stack.upgrade()
    files = small_pngs(stack.staging, 8, nested=False)
    away = tmp_path / "inbox-unmounted"
    with stack.worker("worker", 1):
        with stack.watcher("watch-1") as watcher:
            stack.drop(files[0])
            wait_until(lambda: stack.statuses() == {Status.DONE: 1}, 120, "1 done", stack.logs)
            stack.inbox.rename(away)  # the share drops
            time.sleep(8)  # several polls and rescans against a missing folder
            assert watcher.poll() is None, "the watcher survives the share drop"
            assert not stack.inbox.exists(), "the watcher must not create a local inbox"
            for path in files[1:3]:  # written on the share while it is away from us
                (away / path.name).write_bytes(path.read_bytes())
            away.rename(stack.inbox)  # the share comes back
            stack.drop(files[3])
            wait_until(lambda: stack.statuses() == {Status.DONE: 4}, 120, "4 done", stack.logs)
            os.killpg(watcher.pid, signal.SIGKILL)  # the watcher crashes
            watcher.wait(timeout=10)
        for path in files[4:6]:  # arrive while no watcher runs
            stack.drop(path)
        with stack.watcher("watch-2") as watcher:
            stack.drop(files[6])
            time.sleep(1)
            os.killpg(watcher.pid, signal.SIGTERM)  # restarted again mid-stream
            watcher.wait(timeout=30)
        stack.drop(files[7])
        with stack.watcher("watch-3"):
            wait_until(lambda: stack.statuses() == {Status.DONE: 8}, 180, "8 done", stack.logs)
    found = stack.rows()
    assert sorted(r.source_name for r in found) == sorted(p.name for p in files)
    stack.assert_filed_once()
