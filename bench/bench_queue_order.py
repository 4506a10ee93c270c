"""Does a live arrival overtake a backfill backlog, on each broker?

    python bench/bench_queue_order.py [--backlog 400] [--runs 5] [--model-ms 100]
        [--brokers redis,rabbitmq]

Redis is polled queue by queue (``queue_order_strategy='priority'``); RabbitMQ pushes, and
its quorum queues have no message priority (3.x), so there the order comes from the
per-consumer prefetch of quorum queues: each queue's consumer holds at most
``concurrency`` unacknowledged messages, so a backlog on ``cxr.backfill`` cannot fill the
worker and a live message is delivered at once, to run when the next process frees.

Per run: a fresh database, a private broker, one worker node (``bench/fake_worker.py``,
2 processes, the fake model taking MODEL_MS per batch of 8); BACKLOG files admitted as a
backfill (one task per 8 rows on ``cxr.backfill``), then, one second later, one live file
(``cxr.live``). Printed: how long the live row waited for its claim, how many backfill rows
were claimed between its arrival and its claim, how many results tasks (``cxr.results``)
were delivered and how many overlays were made (the results' work) before the last triage
claim, i.e. while triage work waited. The median of the runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_capacity import FAKE_WORKER, Broker, stop_all
from db import migrate
from db.engine import make_engine, make_session_factory
from ingest.watcher import Origin
from tests.conftest import create_pg_database, drop_pg_database
from tests.processes import rows, service_env
from tests.reliability.stack import small_pngs
from tests.support import wait_until


def run_once(broker: Broker, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    root.mkdir(parents=True)
    url = create_pg_database()
    migrate.upgrade(url)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        env = service_env(root, url, broker.url, CXR_BATCH_SIZE="8")
        log = root / "worker.log"
        with log.open("ab") as out:
            processes.append(
                subprocess.Popen(
                    [*FAKE_WORKER, "--model-ms", str(args.model_ms), "worker", "--concurrency=2"],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        wait_until(lambda: "ready: 2 of 2" in log.read_text(), 300, "the worker", [log])
        # Admission in this process, wired as the watcher wires it (worker.tasks.enqueue).
        import os

        os.environ.update({k: v for k, v in env.items() if k.startswith("CXR_")})
        from worker.settings import get_settings

        get_settings.cache_clear()
        import worker.celery_app as celery_module

        celery_module.app.conf.update(celery_module.celery_config(get_settings()))
        celery_module.app._pool = None
        celery_module.app.__dict__.pop("amqp", None)
        from worker.intake import Intake
        from worker.tasks import enqueue

        settings = get_settings()
        settings.inbox.mkdir(parents=True, exist_ok=True)
        engine = make_engine(url)
        intake = Intake(settings, make_session_factory(engine), enqueue)
        backlog = small_pngs(settings.inbox / "backfill", args.backlog, size=48)
        live = small_pngs(root / "live", 1, size=40, nested=False)[0]
        intake.admit_many([(path, Origin.BACKFILL) for path in backlog])
        time.sleep(1.0)
        target = settings.inbox / "live.png"
        live.rename(target)
        intake.admit(target, Origin.LIVE)
        engine.dispose()
        wait_until(
            lambda: sum(r.status == "done" for r in rows(url)) == args.backlog + 1, 600, "all done"
        )
        found = rows(url)
        (live_row,) = [r for r in found if r.source_name == "live.png"]
        assert live_row.started_at is not None
        overtaken = sum(
            1
            for r in found
            if r.id != live_row.id
            and r.started_at is not None
            and live_row.received_at < r.started_at < live_row.started_at
        )
        last_triage = max(r.started_at for r in found if r.started_at)
        cutoff = last_triage.strftime("%Y-%m-%d %H:%M:%S,%f")[:23]  # the log's format, UTC
        early_results = sum(
            1
            for line in log.read_text().splitlines()
            if "cxr.publish[" in line and line.endswith("received") and line[1:24] < cutoff
        )
        early_overlays = sum(
            1
            for path in settings.overlays.rglob("*.png")
            if path.stat().st_mtime < last_triage.timestamp()
        )
        return {
            "live_wait_s": round((live_row.started_at - live_row.received_at).total_seconds(), 3),
            "backfill_rows_claimed_before_it": overtaken,
            "results_tasks_received_before_the_last_claim": early_results,
            "overlays_made_before_the_last_claim": early_overlays,
        }
    finally:
        stop_all(processes)
        drop_pg_database(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=400)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--model-ms", type=float, default=100.0)
    parser.add_argument("--brokers", default="redis,rabbitmq")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-order-"))
    summary = {}
    for kind in args.brokers.split(","):
        broker = Broker(kind, scratch / f"{kind}-server")
        try:
            results = []
            for n in range(args.runs):
                broker.reset()
                result = run_once(broker, args, scratch / f"{kind}-{n}")
                print(kind, json.dumps(result), flush=True)
                results.append(result)
        finally:
            broker.stop()
        summary[kind] = {key: statistics.median(r[key] for r in results) for key in results[0]}
    print(json.dumps({"median": summary, "load": Path("/proc/loadavg").read_text().split()[:3]}))


if __name__ == "__main__":
    main()
