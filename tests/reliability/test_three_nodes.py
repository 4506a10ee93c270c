"""Three worker nodes, one killed mid-burst: every row final once, its rows taken over.

Three ``cxr-triage worker`` nodes, each on a host of its own (a private UTS namespace: its
own host name in ``claimed_by``, in its Celery node name and its readiness markers) and in
a process group of its own, with one watcher, against one PostgreSQL, one broker (Redis,
then RabbitMQ with quorum queues) and one share at the same path. A burst of 120 small
PNGs and three slow 4,000 x 4,000 JPEG 2000 DICOMs arrives at once; while one node decodes
a slow DICOM, the whole node is SIGKILLed (parent and pool: a lost machine). The surviving
nodes' lease keepers must take its rows over once their lease runs out, and every row must
end ``done`` exactly once, each original filed once.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from db.models import FINAL_STATUSES, Status, utcnow
from tests.reliability.stack import Stack, slow_dicom, small_pngs
from tests.support import wait_until
from tests.support.rabbitmq import PrivateRabbitMQ
from tests.support.servers import PrivateRedis

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.tf, pytest.mark.timeout(600)]

NODES = ("node-a", "node-b", "node-c")
LEASE_S = 10


def _host(claimed_by: str | None) -> str:
    return (claimed_by or "").split(":", 1)[0]


def test_three_nodes_one_killed_mid_burst_every_row_done_once(
    tmp_path: Path, pg_url: str, private_broker: PrivateRedis | PrivateRabbitMQ, model_dir: Path
) -> None:
    stack = Stack(tmp_path, pg_url, private_broker.url, model_dir, CXR_LEASE_S=str(LEASE_S))
    stack.upgrade()
    burst = stack.staging / "burst"
    pngs = small_pngs(burst, 120)
    slow = [slow_dicom(burst / f"slow{n}.dcm") for n in range(3)]
    total = len(pngs) + len(slow)
    with (
        stack.node_worker(NODES[0]) as a,
        stack.node_worker(NODES[1]) as b,
        stack.node_worker(NODES[2]) as c,
        stack.watcher(),
    ):
        nodes = dict(zip(NODES, (a, b, c), strict=True))
        for host in NODES:
            wait_until(
                lambda h=host: "ready: 1 of 1" in stack.log(h).read_text(), 240, f"{host} ready"
            )
        burst.rename(stack.inbox / "burst")  # the whole burst at once

        def slow_in_flight() -> tuple[str, str] | None:
            """(host, claim token) of a task decoding a slow DICOM now."""
            for row in stack.rows():
                if row.status == Status.PROCESSING and "slow" in row.source_name:
                    return _host(row.claimed_by), str(row.claim_token)
            return None

        wait_until(slow_in_flight, 120, "a slow DICOM in flight", stack.logs)
        victim, token = slow_in_flight() or ("", "")
        # The rows of that task: stored together when it ends, seconds from now.
        held = {
            r.id for r in stack.rows() if r.status == Status.PROCESSING and r.claim_token == token
        }
        os.killpg(nodes[victim].pid, signal.SIGKILL)  # the node is lost: parent and pool
        killed, killed_wall = time.monotonic(), utcnow()
        nodes[victim].wait(timeout=10)
        assert held, "the killed node held rows"
        wait_until(
            lambda: stack.statuses() == {Status.DONE: total}, 300, "every row done", stack.logs
        )
        done_s = time.monotonic() - killed
        time.sleep(3)  # a late duplicate delivery would show now
        survivors = [host for host in NODES if host != victim]
        assert all(nodes[host].poll() is None for host in survivors)
    rows = {r.id: r for r in stack.rows()}
    assert len(rows) == total and {r.status for r in rows.values()} <= FINAL_STATUSES
    assert {r.status for r in rows.values()} == {Status.DONE}
    assert len({r.file_sha256 for r in rows.values()}) == total
    for row_id in held:  # taken over: claimed by the dead node once, then by a survivor
        assert rows[row_id].attempts == 2, rows[row_id]
        assert _host(rows[row_id].claimed_by) in survivors, rows[row_id].claimed_by
    others = [r for r in rows.values() if r.id not in held]
    assert {r.attempts for r in others} == {1}, "a row nobody lost was claimed once"
    by_host = {host: sum(_host(r.claimed_by) == host for r in rows.values()) for host in NODES}
    assert all(by_host[host] for host in survivors), by_host
    stack.assert_filed_once()
    assert len(stack.filed()) == total
    claimed_again_s = min((rows[i].started_at - killed_wall).total_seconds() for i in held)
    print(
        f"\n{victim} killed holding {len(held)} row(s): claimed again {claimed_again_s:.1f} s "
        f"and all {total} rows done {done_s:.1f} s after the kill; rows per node {by_host}"
    )
    logs = "".join(stack.log(host).read_text() for host in survivors)
    if isinstance(private_broker, PrivateRabbitMQ):
        # RabbitMQ requeues a dead consumer's unacknowledged messages as soon as its
        # connection drops: the same task, redelivered, takes its rows back at once.
        assert claimed_again_s < LEASE_S, "redelivered before the lease could run out"
    else:
        # Redis would redeliver after the visibility timeout (30 min): the lease keeper
        # of a surviving node takes the rows over once their lease has expired (renewed
        # every LEASE_S / 4 until the kill: it ends 3/4 to 1 lease after it).
        assert claimed_again_s >= LEASE_S * 3 / 4 - 0.5
        assert "took over" in logs
