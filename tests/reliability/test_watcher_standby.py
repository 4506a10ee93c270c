"""One active watcher per share, a standby on another host that takes over when it dies.

Two ``cxr-triage watch`` processes on hosts of their own (private UTS namespaces) against
one PostgreSQL, one broker (Redis, then RabbitMQ) and one share. Only the holder of the
watcher lease admits files; SIGKILL to its whole process group (the node is lost) and the
standby takes over within the lease, and admits what arrived in the gap; a clean stop
(SIGTERM, a rolling update) hands over at the next look. Every file gets one row, and every
row a task; no worker runs, so the tasks are read back from the broker. (No worker moves the
files out of the inbox, so each new term's start-up rescan sends the tasks of the rows still
``queued`` again, as after any watcher restart: a duplicate task finds its row claimed.)
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from db import migrate
from db.engine import make_engine, make_session_factory
from db.leadership import current
from db.models import Status, utcnow
from tests.processes import cli_json
from tests.reliability.stack import Stack, small_pngs
from tests.support import wait_until
from tests.support.brokers import take_task_args
from tests.support.rabbitmq import PrivateRabbitMQ
from tests.support.servers import PrivatePostgres, PrivateRedis
from worker.celery_app import QUEUES
from worker.leadership import WATCHER, Leadership

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.timeout(300)]

LEASE_S = 6.0


def _holder_host(stack: Stack) -> str | None:
    """The host of the watcher lease's holder while its lease runs (read from the database,
    as ``cxr-triage status`` does)."""
    engine = make_engine(stack.database_url)
    try:
        with make_session_factory(engine)() as session:
            lease = current(session, WATCHER)
            if lease is None or lease.expires_at <= utcnow():
                return None
            return lease.holder.split(":", 1)[0]
    finally:
        engine.dispose()


def _admitted_by(stack: Stack, host: str) -> int:
    return stack.log(host).read_text().count(" admitted (")


def test_a_standby_watcher_takes_over_when_the_active_one_dies(
    tmp_path: Path, pg_url: str, private_broker: PrivateRedis | PrivateRabbitMQ
) -> None:
    stack = Stack(
        tmp_path,
        pg_url,
        private_broker.url,
        tmp_path / "no-model",
        CXR_WATCHER_LEASE_S=str(LEASE_S),
        CXR_BATCH_SIZE="4",
        CXR_WATCH_MODE="polling",  # a network share: no inotify events
        CXR_POLL_INTERVAL_S="0.5",
    )
    stack.upgrade()
    files = small_pngs(stack.staging, 30, nested=False)
    with stack.node_watcher("watch-a") as first:
        wait_until(lambda: _holder_host(stack) == "watch-a", 60, "watch-a active", stack.logs)
        with stack.node_watcher("watch-b") as second:
            wait_until(lambda: "standby" in stack.log("watch-b").read_text(), 60, "b standing by")
            for path in files[:10]:
                stack.drop(path)
            wait_until(lambda: len(stack.rows()) == 10, 60, "10 rows", stack.logs)
            time.sleep(2 * LEASE_S / 4)
            assert (_admitted_by(stack, "watch-a"), _admitted_by(stack, "watch-b")) == (10, 0)

            os.killpg(first.pid, signal.SIGKILL)  # the active node is lost
            killed = time.monotonic()
            first.wait(timeout=10)
            for path in files[10:20]:  # arriving while no watcher is active
                stack.drop(path)
            wait_until(lambda: len(stack.rows()) == 20, 60, "20 rows", stack.logs)
            took_over_s = time.monotonic() - killed
            assert _holder_host(stack) == "watch-b"
            assert _admitted_by(stack, "watch-b") == 10

            with stack.node_watcher("watch-c"):  # a new standby, then a rolling update
                wait_until(lambda: "standby" in stack.log("watch-c").read_text(), 60, "c")
                os.killpg(second.pid, signal.SIGTERM)
                stopped = time.monotonic()
                assert second.wait(timeout=30) == 0
                wait_until(lambda: _holder_host(stack) == "watch-c", 30, "c active", stack.logs)
                handed_s = time.monotonic() - stopped
                for path in files[20:]:
                    stack.drop(path)
                wait_until(lambda: len(stack.rows()) == 30, 60, "30 rows", stack.logs)
                assert _admitted_by(stack, "watch-c") == 10
                status = cli_json(["status", "--json"], stack.env)
                watcher = status["watcher"]
                assert watcher["active"] and watcher["holder"].startswith("watch-c:"), watcher
                # no worker runs: `status` reads the tasks waiting from either broker
                assert status["queues"]["cxr.live"] + status["queues"]["cxr.backfill"] > 0
    print(
        f"\nwatcher taken over {took_over_s:.1f} s after SIGKILL (lease {LEASE_S:.0f} s); "
        f"handed over {handed_s:.1f} s after SIGTERM"
    )
    assert "lease released" in stack.log("watch-b").read_text()
    assert handed_s < LEASE_S, "a clean stop hands over without waiting out the lease"
    rows = stack.rows()
    assert len(rows) == 30 and {r.status for r in rows} == {Status.QUEUED}
    assert len({r.file_sha256 for r in rows}) == 30
    assert sorted(r.source_name for r in rows) == sorted(p.name for p in files)
    sent = {row_id for batch in take_task_args(private_broker.url, QUEUES) for row_id in batch}
    assert sent == {r.id for r in rows}, "a task for every row, on the broker"


def test_an_active_watcher_that_cannot_reach_the_database_steps_down_before_its_lease_ends(
    private_postgres: PrivatePostgres,
) -> None:
    """PostgreSQL stopped (immediate) under a running leader: it stops its watcher within
    ``lease - lease/4`` of its last renewal, before a standby could see the lease expire;
    once the database is back it leads again."""
    migrate.upgrade(private_postgres.url)
    engine = make_engine(private_postgres.url)
    lease_s = 4.0
    leader = Leadership(make_session_factory(engine), lease_s, holder="alone")
    active = threading.Event()
    stopped_at: list[float] = []

    def work(term_stop: threading.Event) -> None:
        active.set()
        term_stop.wait()
        stopped_at.append(time.monotonic())
        active.clear()

    stop = threading.Event()
    thread = threading.Thread(target=leader.run, args=(work, stop))
    thread.start()
    try:
        wait_until(active.is_set, 10, "leading")
        time.sleep(lease_s / 4 + 0.2)  # at least one renewal done
        private_postgres.stop()
        down_at = time.monotonic()
        wait_until(lambda: not active.is_set(), 3 * lease_s, "stepping down")
        assert stopped_at[0] - down_at < lease_s, "stopped before the lease could expire"
        private_postgres.start()
        wait_until(active.is_set, 6 * lease_s, "leading again once the database is back")
    finally:
        stop.set()
        thread.join(30)
        engine.dispose()
