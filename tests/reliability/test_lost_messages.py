"""Scenario 25: the broker restarts empty (Redis without persistence) while rows wait for
their tasks, with the default settings (``CXR_REQUEUE_AFTER_S`` 900). A live worker node's
lease keeper sees no triage message on the broker while rows are queued, and sends their
tasks again within a minute; each row is scored once (attempts 1), each original filed once.
Before: the rows waited for the watcher's re-hand after 900 s."""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path

import pytest

from db.models import Status
from tests.reliability.stack import Stack, small_pngs
from tests.support import wait_until
from tests.support.servers import PrivateRedis
from worker.celery_app import BACKFILL_QUEUE, LIVE_QUEUE

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.tf, pytest.mark.timeout(420)]


def waiting(redis: PrivateRedis) -> int:
    """Messages on the triage queues (kombu keeps each queue as a Redis list)."""
    client = redis.client()
    return sum(client.llen(name) for name in (LIVE_QUEUE, BACKFILL_QUEUE))


def test_rows_whose_tasks_the_broker_lost_are_sent_again_within_a_minute(
    tmp_path: Path, pg_url: str, private_redis: PrivateRedis, model_dir: Path
) -> None:
    stack = Stack(tmp_path, pg_url, private_redis.url, model_dir)
    stack.upgrade()
    files = small_pngs(stack.staging, 4, nested=False)
    with stack.watcher():
        for path in files:  # no worker yet: four tasks wait in Redis
            stack.drop(path)
        wait_until(lambda: stack.statuses() == {Status.QUEUED: 4}, 60, "4 queued", stack.logs)
        wait_until(lambda: waiting(private_redis) >= 1, 60, "their task in Redis", stack.logs)
        private_redis.stop()
        private_redis.start()  # empty: the four tasks are gone
        restarted = time.time()
        with stack.worker("worker", 1):
            wait_until(lambda: stack.statuses() == {Status.DONE: 4}, 150, "4 done", stack.logs)
            done_s = time.time() - restarted
    log = stack.log("worker").read_text()
    match = re.search(
        r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+.*their tasks were lost; sent again: (.*)", log
    )
    assert match, log[-3000:]
    resent_s = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").timestamp() - restarted
    print(f"lost tasks sent again {resent_s:.0f} s after the broker came back; done {done_s:.0f} s")
    assert resent_s < 60
    assert sorted(int(i) for i in match.group(2).split(", ")) == sorted(r.id for r in stack.rows())
    assert all(r.attempts == 1 for r in stack.rows())  # each scored once
    assert "task sent again" not in stack.log("watch").read_text()  # not the 900 s re-hand
    stack.assert_filed_once()
