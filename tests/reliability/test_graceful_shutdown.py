"""Scenario 9: SIGTERM to a worker while it works (docker stop, a deploy).

Celery's warm shutdown lets the task in hand finish; tasks it had reserved but not started
go back to the broker. No row is left in ``processing``; a fresh worker finishes the rest.
A row left ``processing`` by a worker that vanished (SIGKILL on the whole node, see
``test_worker_killed``) is requeued once it is older than ``CXR_REQUEUE_AFTER_S``.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from db.models import Status
from tests.reliability.stack import Stack, slow_dicom, small_pngs
from tests.support import wait_until
from tests.support.rabbitmq import PrivateRabbitMQ
from tests.support.servers import PrivateRedis

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.tf, pytest.mark.timeout(420)]


def test_sigterm_finishes_the_task_in_hand_and_leaves_nothing_processing(
    tmp_path: Path, pg_url: str, private_broker: PrivateRedis | PrivateRabbitMQ, model_dir: Path
) -> None:
    """On both brokers: on RabbitMQ the worker also holds prefetched messages of the other
    queues (a prefetch per consumer), which a warm shutdown hands back."""
    stack = Stack(
        tmp_path,
        pg_url,
        private_broker.url,
        model_dir,
        CXR_BATCH_SIZE="1",
        CXR_TASK_TIME_LIMIT_S="120",
        CXR_VISIBILITY_TIMEOUT_S="150",
    )
    stack.upgrade()
    slow_dicom(stack.staging / "slow.dcm")
    pngs = small_pngs(stack.staging, 5, nested=False)
    with stack.watcher():
        with stack.worker("first", 1) as first:
            stack.drop(stack.staging / "slow.dcm")
            wait_until(
                lambda: stack.statuses().get(Status.PROCESSING) == 1, 120, "in flight", stack.logs
            )
            for path in pngs:
                stack.drop(path)
            wait_until(lambda: len(stack.rows()) == 6, 30, "six rows", stack.logs)
            os.kill(first.pid, signal.SIGTERM)  # warm shutdown
            assert first.wait(timeout=180) == 0
        after_stop = stack.statuses()
        assert Status.PROCESSING not in after_stop, after_stop
        slow = next(r for r in stack.rows() if r.source_name == "slow.dcm")
        assert slow.status == Status.DONE and slow.attempts == 1, "finished, not abandoned"
        with stack.worker("second", 1):
            wait_until(lambda: stack.statuses() == {Status.DONE: 6}, 180, "6 done", stack.logs)
    assert "Warm shutdown" in stack.log("first").read_text()
    stack.assert_filed_once()
