"""Scenario: the share fails under a worker for longer than a lease (an NFS or SMB server
restarting). The task's reads raise ``OSError``, Celery retries it with growing backoff, and
its rows wait for the retry, held (``db.leases.hold``). Before, nobody renewed a waiting
retry's lease: once the backoff outgrew the lease a keeper took the rows over, each take-over
counted one attempt, and a share outage of a few minutes failed innocent films as poison
files (``too_many_attempts``).

Here the poison cap is 1, so a single attempt counted by mistake fails a film: every row must
end ``done`` with one attempt, none taken over, when the share is back.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from db.models import Status
from ingest.staging import staging_dir
from tests.reliability.stack import Stack, small_pngs
from tests.support import wait_until
from tests.support.servers import PrivateRedis

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.tf, pytest.mark.timeout(420)]

LEASE_S = 3
FILMS = 4


def test_a_share_outage_longer_than_a_lease_fails_no_film(
    tmp_path: Path, pg_url: str, private_redis: PrivateRedis, model_dir: Path
) -> None:
    stack = Stack(
        tmp_path,
        pg_url,
        private_redis.url,
        model_dir,
        CXR_LEASE_S=str(LEASE_S),
        CXR_MAX_ATTEMPTS="1",
        CXR_BATCH_SIZE=str(FILMS),
    )
    stack.upgrade()
    pngs = small_pngs(stack.staging, FILMS, nested=False)
    worker_log = stack.log("worker")
    staging = staging_dir(stack.inbox)
    with stack.worker("worker", 1) as worker, stack.watcher():
        wait_until(lambda: "ready: 1 of 1" in worker_log.read_text(), 240, "worker ready")
        # The share fails: the worker can no longer move a claimed file into its staging
        # folder (a file stands where the folder was: every move raises an OSError).
        if staging.is_dir():
            staging.rmdir()
        staging.write_bytes(b"")
        for png in pngs:
            stack.drop(png)
        wait_until(
            lambda: _a_retry_longer_than_the_lease_ran(worker_log.read_text()),
            240,
            "a retry that waited longer than two leases, and the one after it",
            stack.logs,
        )
        assert stack.statuses() == {Status.PROCESSING: FILMS}, "no film failed or finished"
        staging.unlink()  # the share is back
        wait_until(
            lambda: stack.statuses() == {Status.DONE: FILMS}, 240, "every film done", stack.logs
        )
        assert worker.poll() is None
    rows = stack.rows()
    assert [row.attempts for row in rows] == [1] * FILMS, "a retry is not an attempt"
    log = worker_log.read_text()
    assert "Retry in" in log and "took over" not in log
    stack.assert_filed_once()


def _a_retry_longer_than_the_lease_ran(log: str) -> bool:
    """Celery logs each retry's countdown ("Retry in 5s"); one longer than two leases that was
    followed by another retry has run, its rows held all the while."""
    waits = [float(s) for s in re.findall(r"Retry in (\d+(?:\.\d+)?)s", log)]
    return any(wait > 2 * LEASE_S for wait in waits[:-1])
