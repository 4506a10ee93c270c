"""Scenario 1: a worker is killed (SIGKILL) while a task runs.

The task is in flight for real: a 4,000 x 4,000 JPEG 2000 DICOM takes seconds to decode.
Killing the pool process makes the parent reject the task back to the queue (acks late +
reject on worker lost); killing the whole node leaves the message unacknowledged, and a
fresh worker gets the row back (the watcher re-sends the task for a row stuck past
``requeue_after_s``, and the claim takes over a stale row). Either way the row ends ``done``
exactly once and its original is archived once.

The first two run on Redis and on RabbitMQ (where a dead consumer's messages are requeued
as soon as its connection drops, instead of after the visibility timeout); the take-over by
a running node is proven on both brokers with three nodes (``test_three_nodes.py``), and the
poison file's cap is the database's, whatever the broker.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from db.models import Status, utcnow
from tests.reliability.stack import Stack, slow_dicom, small_pngs
from tests.support import alive, children, wait_until
from tests.support.rabbitmq import PrivateRabbitMQ
from tests.support.servers import PrivateRedis

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.tf, pytest.mark.timeout(420)]


def _stack(
    tmp_path: Path, pg_url: str, broker: PrivateRedis | PrivateRabbitMQ, model_dir: Path
) -> Stack:
    stack = Stack(
        tmp_path,
        pg_url,
        broker.url,
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
    tmp_path: Path, pg_url: str, private_broker: PrivateRedis | PrivateRabbitMQ, model_dir: Path
) -> None:
    stack = _stack(tmp_path, pg_url, private_broker, model_dir)
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
    assert len(list(stack.archive.rglob("*.dcm"))) == 1  # named by hash, not "slow.dcm"


def test_whole_worker_node_killed_mid_task_is_recovered_by_a_fresh_worker(
    tmp_path: Path, pg_url: str, private_broker: PrivateRedis | PrivateRabbitMQ, model_dir: Path
) -> None:
    stack = _stack(tmp_path, pg_url, private_broker, model_dir)
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
    assert len(list(stack.archive.rglob("*.dcm"))) == 1  # named by hash, not "slow.dcm"


def test_a_dead_nodes_claims_are_taken_over_by_a_running_worker_within_a_minute(
    tmp_path: Path, pg_url: str, private_redis: PrivateRedis, model_dir: Path
) -> None:
    """Default settings: no shortened re-hand or visibility timeout. Two workers run; the
    one that claimed the batch (a slow DICOM and three PNG batch-mates) is SIGKILLed whole;
    the other must finish every row it held well before the 900 s re-hand, each once."""
    stack = Stack(tmp_path, pg_url, private_redis.url, model_dir)
    stack.upgrade()
    slow_dicom(stack.staging / "slow.dcm")
    mates = small_pngs(stack.staging, 3, nested=False)
    with stack.watcher(), stack.worker("one", 1) as one, stack.worker("two", 1) as two:
        for worker, name in ((one, "one"), (two, "two")):
            wait_until(lambda w=worker: len(children(w.pid)) == 1, 180, "pools", stack.logs)
            wait_until(lambda n=name: "ready" in stack.log(n).read_text(), 180, "ready")
        for path in (stack.staging / "slow.dcm", *mates):
            stack.drop(path)
        wait_until(lambda: _processing(stack), 60, "the batch claimed", stack.logs)
        held = {r.id: r.claimed_by for r in stack.rows() if r.status == Status.PROCESSING}
        holders = {int((by or "0").rsplit(":", 1)[1]) for by in held.values()}
        victim, survivor = (one, two) if holders <= set(children(one.pid)) else (two, one)
        assert holders <= set(children(victim.pid)), "one node holds the claimed rows"
        for pid in (*children(victim.pid), victim.pid):  # the node dies at once
            os.kill(pid, signal.SIGKILL)
        killed_at, killed_wall = time.monotonic(), utcnow()
        victim.wait(timeout=10)
        wait_until(
            lambda: stack.statuses() == {Status.DONE: 4}, 60, "the rows taken over", stack.logs
        )
        took_over_s = time.monotonic() - killed_at
        time.sleep(3)  # a late duplicate would show now
        assert survivor.poll() is None
    rows = {r.id: r for r in stack.rows()}
    claimed_s = min((rows[i].started_at - killed_wall).total_seconds() for i in held)
    print(
        f"\n{len(held)} claimed row(s) of a killed node: claimed again {claimed_s:.1f} s and "
        f"done {took_over_s:.1f} s after the kill"
    )
    assert {rows[i].attempts for i in held} == {2}, "claimed by the dead node, then once more"
    survivor_pids = {int((rows[i].claimed_by or "0").rsplit(":", 1)[1]) for i in held}
    assert survivor_pids.isdisjoint(holders)
    stack.assert_filed_once()
    assert len(list(stack.archive.rglob("*.dcm"))) == 1  # named by hash, not "slow.dcm"
    assert "took over" in "".join(stack.log(n).read_text() for n in ("one", "two"))


def test_a_file_that_keeps_killing_its_worker_is_failed_after_max_attempts(
    tmp_path: Path, pg_url: str, private_redis: PrivateRedis, model_dir: Path
) -> None:
    """The poison file: its pool process is SIGKILLed (as the OOM killer would) on every
    attempt. After CXR_MAX_ATTEMPTS (2 here, to spare a third TensorFlow start) the next
    delivery fails the row as ``too_many_attempts`` and quarantines the file unread."""
    stack = Stack(tmp_path, pg_url, private_redis.url, model_dir, CXR_MAX_ATTEMPTS="2")
    stack.upgrade()
    slow_dicom(stack.staging / "slow.dcm")
    with stack.worker("worker", 1) as worker, stack.watcher():
        stack.drop(stack.staging / "slow.dcm")
        for attempt in (1, 2):
            wait_until(lambda: len(children(worker.pid)) == 1, 180, "a pool process", stack.logs)
            wait_until(
                lambda a=attempt: any(
                    r.status == Status.PROCESSING and r.attempts == a for r in stack.rows()
                ),
                120,
                f"attempt {attempt} in flight",
                stack.logs,
            )
            (victim,) = children(worker.pid)
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda v=victim: not alive(v), 10, "the pool process to die")
        wait_until(lambda: stack.statuses() == {Status.FAILED: 1}, 240, "given up", stack.logs)
        assert worker.poll() is None
    (row,) = stack.rows()
    assert (row.reason, row.attempts) == ("too_many_attempts", 3)
    quarantined = Path(row.archived_path or "")
    assert quarantined.parent == stack.quarantine / "too_many_attempts"
    assert quarantined.with_name(quarantined.name + ".json").is_file()
    stack.assert_filed_once()
