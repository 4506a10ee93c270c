"""Scenario 1: a worker is killed (SIGKILL) while a task runs.

The task is in flight for real: a 4,000 x 4,000 JPEG 2000 DICOM takes seconds to decode.
Killing the pool process makes the parent reject the task back to the queue (acks late +
reject on worker lost); killing the whole node leaves the message unacknowledged, and a
fresh worker gets the row back (the watcher re-sends the task for a row stuck past
``requeue_after_s``, and the claim takes over a stale row). Either way the row ends ``done``
exactly once and its original is archived once.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from db.models import Status
from tests.processes import wait_until
from tests.reliability.conftest import PrivateRedis, alive, children
from tests.reliability.stack import Stack, slow_dicom

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.tf, pytest.mark.timeout(420)]


def _stack(tmp_path: Path, pg_url: str, redis: PrivateRedis, model_dir: Path) -> Stack:
    stack = Stack(
        tmp_path,
        pg_url,
        redis.url,
        model_dir,
        CXR_BATCH_SIZE="1",
        CXR_TASK_TIME_LIMIT_S="120",
        CXR_VISIBILITY_TIMEOUT_S="150",
        CXR_REQUEUE_AFTER_S="20",
    )
    stack.upgrade()
    return stack


def _processing(stack: Stack) -> bool:
    return any(r.status == Status.PROCESSING for r in stack.rows())


def test_pool_process_killed_mid_task_is_redelivered_and_done_once(
    tmp_path: Path, pg_url: str, private_redis: PrivateRedis, model_dir: Path
) -> None:
    stack = _stack(tmp_path, pg_url, private_redis, model_dir)
    slow_dicom(stack.staging / "slow.dcm")
    with stack.worker("worker", 1) as worker, stack.watcher():
        wait_until(lambda: len(children(worker.pid)) == 1, 120, "the pool process", stack.logs)
        stack.drop(stack.staging / "slow.dcm")
        wait_until(lambda: _processing(stack), 60, "the task in flight", stack.logs)
        (victim,) = children(worker.pid)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: not alive(victim), 10, "the pool process to die")
        wait_until(lambda: stack.statuses() == {Status.DONE: 1}, 240, "the row done", stack.logs)
        assert worker.poll() is None, "the worker node survives the loss of a pool process"
    (row,) = stack.rows()
    assert row.attempts == 2, "claimed once by the killed process, once by the redelivery"
    worker_log = stack.log("worker").read_text()
    assert "WorkerLostError" in worker_log or "SIGKILL" in worker_log
    stack.assert_filed_once()
    assert len(list(stack.archive.rglob("*_slow.dcm"))) == 1


def test_whole_worker_node_killed_mid_task_is_recovered_by_a_fresh_worker(
    tmp_path: Path, pg_url: str, private_redis: PrivateRedis, model_dir: Path
) -> None:
    stack = _stack(tmp_path, pg_url, private_redis, model_dir)
    slow_dicom(stack.staging / "slow.dcm")
    with stack.watcher():
        with stack.worker("first", 1) as first:
            wait_until(lambda: len(children(first.pid)) == 1, 120, "the pool", stack.logs)
            stack.drop(stack.staging / "slow.dcm")
            wait_until(lambda: _processing(stack), 60, "the task in flight", stack.logs)
            for pid in (*children(first.pid), first.pid):  # the node dies at once
                os.kill(pid, signal.SIGKILL)
            first.wait(timeout=10)
        time.sleep(1)
        assert stack.statuses() == {Status.PROCESSING: 1}, "held by the dead worker"
        with stack.worker("second", 1):
            wait_until(
                lambda: stack.statuses() == {Status.DONE: 1}, 300, "the row done", stack.logs
            )
            time.sleep(3)  # a late duplicate delivery would show now
    (row,) = stack.rows()
    assert row.status == Status.DONE and row.attempts == 2
    stack.assert_filed_once()
    assert len(list(stack.archive.rglob("*_slow.dcm"))) == 1
