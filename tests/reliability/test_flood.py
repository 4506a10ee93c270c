"""Scenario 5: a flood of 5,000 small files dropped at once into nested folders.

Every file is processed once; the worker's resident memory (parent + pool processes) is
sampled throughout and must stay bounded; queue depth shows in ``cxr-triage status`` during
the flood, and Flower answers its API only with credentials. Peak RSS and throughput are
printed for the README's table (not asserted as benchmarks).
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from db.models import Status
from tests.processes import cli_json, running
from tests.reliability.stack import Stack, iter_tree, small_pngs
from tests.support import free_port, rss_kib, wait_until
from tests.support.rabbitmq import PrivateRabbitMQ
from tests.support.servers import PrivateRedis

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.tf, pytest.mark.timeout(900)]

#: About two minutes on CI's 2 cores (the heatmaps and SR/SC wait on their own queue);
#: CXR_TEST_FLOOD_FILES scales it up or down.
FILES = int(os.environ.get("CXR_TEST_FLOOD_FILES", "5000"))
#: Redis in CI; CXR_TEST_FLOOD_BROKERS=redis,rabbitmq adds RabbitMQ (README "Scaling out":
#: the broker-specific parts are proven on both by lighter tests, this one costs minutes).
BROKERS = os.environ.get("CXR_TEST_FLOOD_BROKERS", "redis").split(",")
RSS_BOUND_KIB = 4 * 1024 * 1024  # parent + 2 pool processes with TensorFlow: generous


def _get(url: str, auth: str | None = None) -> int:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (urllib.error.URLError, OSError):
        return 0  # not listening yet


@pytest.mark.parametrize("private_broker", BROKERS, indirect=True)
def test_five_thousand_files_each_processed_once_with_bounded_memory(
    tmp_path: Path, pg_url: str, private_broker: PrivateRedis | PrivateRabbitMQ, model_dir: Path
) -> None:
    port = free_port()
    credentials = "operator:flood-test-only"
    stack = Stack(
        tmp_path,
        pg_url,
        private_broker.url,
        model_dir,
        CXR_BATCH_SIZE="32",
        CXR_FLOWER_BASIC_AUTH=credentials,
        CXR_FLOWER_PORT=str(port),
    )
    stack.upgrade()
    flood = stack.staging / "flood"
    small_pngs(flood, FILES)
    peak = {"rss_kib": 0}
    depths: list[dict] = []  # type: ignore[type-arg]
    done = threading.Event()
    with (
        stack.worker("worker", 2) as worker,
        stack.watcher(),
        running(["flower"], stack.env, stack.log("flower")),
    ):

        def sample() -> None:
            while not done.wait(0.5):
                total = sum(rss_kib(pid) for pid in iter_tree(worker.pid))
                peak["rss_kib"] = max(peak["rss_kib"], total)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        wait_until(
            lambda: _get(f"http://127.0.0.1:{port}/healthcheck") == 200, 120, "Flower", stack.logs
        )
        started = time.monotonic()
        flood.rename(stack.inbox / "flood")  # all at once
        while len(stack.rows()) < FILES or stack.statuses().get(Status.DONE, 0) < FILES:
            status = cli_json(["status", "--json"], stack.env)
            depths.append(status)
            assert time.monotonic() - started < 780, f"not done: {stack.statuses()}"
            assert worker.poll() is None
            time.sleep(5)
        elapsed = time.monotonic() - started
        api = f"http://127.0.0.1:{port}/api/workers"
        unauthenticated, authenticated = _get(api), _get(api, credentials)
        wrong = _get(api, "operator:wrong")
        done.set()
    found = stack.rows()
    assert len(found) == FILES and len({r.file_sha256 for r in found}) == FILES
    assert {r.status for r in found} == {Status.DONE}
    assert max(r.attempts for r in found) == 1, "no file processed twice"
    stack.assert_filed_once()
    assert len(stack.filed()) == FILES
    waiting = [d["counts"]["queued"] + d["counts"]["processing"] for d in depths]
    broker = [sum(v or 0 for v in d["queues"].values()) for d in depths]
    assert max(waiting) > 0 and max(broker) > 0, "status showed the backlog"
    assert (unauthenticated, wrong, authenticated) == (401, 401, 200)
    assert peak["rss_kib"] < RSS_BOUND_KIB, peak
    report = {
        "files": FILES,
        "elapsed_s": round(elapsed, 1),
        "files_per_s": round(FILES / elapsed, 1),
        "peak_worker_rss_mib": round(peak["rss_kib"] / 1024),
        "max_broker_depth": max(broker),
        "max_waiting_rows": max(waiting),
    }
    print("FLOOD", json.dumps(report))
    (stack.root / "flood-report.json").write_text(json.dumps(report))
