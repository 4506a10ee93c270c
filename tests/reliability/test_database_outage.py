"""Scenario 3: PostgreSQL becomes unreachable while tasks run and files arrive.

A task whose database write fails is retried by Celery with exponential backoff (jitter,
capped); the watcher keeps retrying the admission of new files. When the server is back,
every file has exactly one row and every row is final; nothing is lost or duplicated.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from db.models import Status
from tests.reliability.stack import Stack, slow_dicom, small_pngs
from tests.support import wait_until
from tests.support.servers import PrivatePostgres, PrivateRedis

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.tf, pytest.mark.timeout(480)]


def test_tasks_retry_through_a_database_outage_and_complete_once(
    tmp_path: Path,
    private_postgres: PrivatePostgres,
    private_redis: PrivateRedis,
    model_dir: Path,
) -> None:
    stack = Stack(
        tmp_path,
        private_postgres.url,
        private_redis.url,
        model_dir,
        CXR_BATCH_SIZE="2",
        CXR_TASK_TIME_LIMIT_S="120",
        CXR_VISIBILITY_TIMEOUT_S="150",
    )
    stack.upgrade()
    pngs = small_pngs(stack.staging, 6, nested=False)
    slow_dicom(stack.staging / "slow.dcm")
    with stack.watcher() as watcher, stack.worker("worker", 1) as worker:
        stack.drop(pngs[0])
        wait_until(lambda: stack.statuses() == {Status.DONE: 1}, 120, "1 done", stack.logs)
        stack.drop(stack.staging / "slow.dcm")
        wait_until(
            lambda: stack.statuses().get(Status.PROCESSING) == 1, 60, "slow in flight", stack.logs
        )
        for path in pngs[1:3]:  # queued behind the slow one
            stack.drop(path)
        wait_until(lambda: len(stack.rows()) == 4, 30, "rows for the arrivals", stack.logs)
        private_postgres.stop()  # while the slow task decodes
        for path in pngs[3:]:  # arrive during the outage: no row can be written yet
            stack.drop(path)
        time.sleep(25)
        assert watcher.poll() is None and worker.poll() is None
        private_postgres.start()
        wait_until(lambda: stack.statuses() == {Status.DONE: 7}, 300, "7 done", stack.logs)
        time.sleep(3)
        assert watcher.poll() is None and worker.poll() is None
    found = stack.rows()
    assert len(found) == 7 and len({r.file_sha256 for r in found}) == 7
    stack.assert_filed_once()
    worker_log = stack.log("worker").read_text()
    assert "Retry in" in worker_log, "the task was retried with a countdown"
