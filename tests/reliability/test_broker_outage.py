"""Scenario 2: the broker goes away (SIGKILL) while files arrive, then comes back.

On Redis (a private server without persistence) the outage also loses the tasks that were
waiting in it: the harshest case. Files that arrive during the outage get their rows (the
database is up) and their tasks once Redis is back; rows whose tasks were lost are re-sent
by the watcher after ``requeue_after_s``. The watcher never dies; nothing is enqueued twice
in the worklist.

On RabbitMQ (a private node) the same, and more: the queues are durable quorum queues and
every publish was confirmed, so the two tasks that waited when the node was killed are
still there when it is back.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from db.models import Status
from tests.reliability.stack import Stack, small_pngs
from tests.support import wait_until
from tests.support.brokers import peek_tasks
from tests.support.rabbitmq import PrivateRabbitMQ
from tests.support.servers import PrivateRedis
from worker.celery_app import BACKFILL_QUEUE, LIVE_QUEUE

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.tf, pytest.mark.timeout(420)]


def test_files_arriving_during_a_broker_outage_are_all_processed_once(
    tmp_path: Path, pg_url: str, private_broker: PrivateRedis | PrivateRabbitMQ, model_dir: Path
) -> None:
    stack = Stack(tmp_path, pg_url, private_broker.url, model_dir, CXR_REQUEUE_AFTER_S="20")
    stack.upgrade()
    files = small_pngs(stack.staging, 9, nested=False)
    with stack.watcher() as watcher:
        with stack.worker("worker", 1):
            for path in files[:2]:
                stack.drop(path)
            wait_until(lambda: stack.statuses() == {Status.DONE: 2}, 120, "2 done", stack.logs)
        # No worker: two tasks wait on the broker, then it dies (Redis loses them).
        for path in files[2:4]:
            stack.drop(path)
        wait_until(lambda: stack.statuses().get(Status.QUEUED) == 2, 60, "2 queued", stack.logs)
        waiting = {r.id for r in stack.rows() if r.status == Status.QUEUED}
        private_broker.stop()
        for path in files[4:]:  # arrive while the broker is down
            stack.drop(path)
        wait_until(lambda: len(stack.rows()) == 9, 60, "rows for every arrival", stack.logs)
        time.sleep(10)
        assert watcher.poll() is None, "the watcher survives the broker outage"
        assert stack.statuses() == {Status.DONE: 2, Status.QUEUED: 7}
        private_broker.start()  # Redis empty: the two waiting tasks are gone
        if isinstance(private_broker, PrivateRabbitMQ):

            def survived() -> bool:
                sent = [
                    ids
                    for queue in (LIVE_QUEUE, BACKFILL_QUEUE)
                    for _, ids in peek_tasks(private_broker.url, queue)
                ]
                return waiting <= {row_id for ids in sent for row_id in ids}

            wait_until(survived, 30, "the tasks sent before the crash, still queued")
        with stack.worker("worker", 1) as worker:
            wait_until(lambda: stack.statuses() == {Status.DONE: 9}, 240, "9 done", stack.logs)
            time.sleep(3)
            assert worker.poll() is None
        assert watcher.poll() is None
    found = stack.rows()
    assert len(found) == 9 and len({r.file_sha256 for r in found}) == 9
    assert sorted(r.source_name for r in found) == sorted(p.name for p in files)
    stack.assert_filed_once()
    assert "task sent again" in stack.log("watch").read_text()
