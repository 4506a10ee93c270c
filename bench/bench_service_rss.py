"""Resident memory of the long-running services, for the Kubernetes requests and limits.

    python bench/bench_service_rss.py [--seconds 20] [--files 200]

Starts ``watch``, ``web``, ``listen``, ``deliver`` and ``flower`` (the real CLI) against a
throwaway PostgreSQL database and Redis db 14, lets the watcher admit FILES small PNGs (no
worker: they stay queued), samples each process tree's RSS every 0.5 s for SECONDS, and
prints the peak in MiB. The worker's own figure is README "Reliability" row 5 (the flood
test samples it under 5,000 files).
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis

from bench.bench_capacity import descendants
from tests.conftest import create_pg_database, drop_pg_database
from tests.processes import cli, running, service_env
from tests.reliability.stack import small_pngs
from tests.support import free_port, rss_kib

SERVICES = {
    "watch": ["watch"],
    "web": ["web", "--host", "127.0.0.1", "--port", "{web_port}"],
    "listen": ["listen"],
    "deliver": ["deliver"],
    "flower": ["flower", "--no-auth", "--port", "{flower_port}"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--files", type=int, default=200)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-rss-"))
    url = create_pg_database()
    broker = "redis://127.0.0.1:6379/14"
    redis.Redis.from_url(broker).flushdb()
    ports = {"web_port": str(free_port()), "flower_port": str(free_port())}
    env = service_env(
        root,
        url,
        broker,
        CXR_WEB_PASSWORD=secrets.token_urlsafe(16),  # a throwaway account
        CXR_LISTEN_PORT=str(free_port()),
        CXR_PACS_HOST="127.0.0.1",
        CXR_PACS_PORT=str(free_port()),
    )
    peaks: dict[str, int] = {}
    try:
        cli(["db", "upgrade"], env)
        (root / "inbox").mkdir()
        burst = root / "burst"
        small_pngs(burst, args.files, size=64)
        with ExitStack() as stack:
            processes = {
                name: stack.enter_context(
                    running([part.format(**ports) for part in argv], env, root / f"{name}.log")
                )
                for name, argv in SERVICES.items()
            }
            time.sleep(5)
            burst.rename(root / "inbox" / "burst")
            deadline = time.monotonic() + args.seconds
            while time.monotonic() < deadline:
                for name, process in processes.items():
                    rss = sum(rss_kib(pid) for pid in descendants(process.pid))
                    peaks[name] = max(peaks.get(name, 0), rss)
                time.sleep(0.5)
            alive = {name: process.poll() is None for name, process in processes.items()}
    finally:
        drop_pg_database(url)
        redis.Redis.from_url(broker).flushdb()
    report = {name: round(kib / 1024) for name, kib in peaks.items()}
    print(json.dumps({"peak_rss_mib": report, "alive": alive}))


if __name__ == "__main__":
    main()
