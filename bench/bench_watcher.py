"""CPU of the ``watch`` process per file over bursts of dataset JPEGs, without a worker.

    python bench/bench_watcher.py [--n 500] [--bursts 5]

The real ``cxr-triage watch`` on a throwaway PostgreSQL database and Redis db 14 (or
``CXR_TEST_REDIS_DB``), settings as in ``bench_pipeline.py``. Each burst: N new files renamed
into the inbox at once; once each has a row (or was quarantined as a duplicate), the
worker's part in the inbox is played at 300 files/s: the file renamed into
``.cxr-staging``, read three times (sniff, hash, decode), then moved out of the inbox as
filing does. The figure is the watch process's CPU time (all threads, Linux ``/proc``) from
the drop until one second after the last move, per file; the median of the bursts after the
first (the first also pays lazy imports). Tasks pile up in Redis unconsumed and are flushed.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis
from bench_pipeline import REDIS_URL, group_cpu_s, sources
from sqlalchemy import func, select

from db.engine import make_engine, make_session_factory
from db.models import WorklistEntry
from ingest.staging import staging_dir
from tests.conftest import create_pg_database, drop_pg_database
from tests.processes import cli, running, service_env
from tests.support import wait_until

FILING_RATE = 300.0  # files/s the worker takes from the inbox, about the pipeline's rate
READS_PER_FILE = 3


def burst(files: list[Path], root: Path, pg_url: str, tag: str, pid: int) -> float:
    """Watcher CPU seconds for one burst of ``files``."""
    inbox, staging, gone = root / "inbox", root / "staging", root / "gone"
    for i, path in enumerate(files):
        shutil.copyfile(path, staging / f"{tag}-{i:05d}{path.suffix}")
    engine = make_engine(pg_url)
    sessions = make_session_factory(engine)

    def settled() -> bool:  # every file has a row or was quarantined as a duplicate
        with sessions() as session:
            admitted = session.scalar(
                select(func.count())
                .select_from(WorklistEntry)
                .where(WorklistEntry.source_name.like(f"{tag}-%"))
            )
        duplicates = len(list((root / "quarantine").rglob(f"*{tag}-*.jpeg")))
        return (admitted or 0) + duplicates >= len(files)

    cpu_before = group_cpu_s({pid})[pid]
    for path in sorted(staging.iterdir()):
        path.rename(inbox / path.name)
    wait_until(settled, 120, "every file admitted", [root / "watch.log"])
    staged_folder = staging_dir(inbox)
    staged_folder.mkdir(exist_ok=True)
    staged: list[Path] = []
    for n, path in enumerate(sorted(p for p in inbox.iterdir() if p.is_file())):
        staged.append(staged_folder / f"{tag}-{n}")
        path.rename(staged[-1])
        for _ in range(READS_PER_FILE):
            staged[-1].read_bytes()
        if len(staged) > 8:  # a batch being scored while the next is claimed
            staged.pop(0).rename(gone / f"{tag}-{n}")
        time.sleep(1 / FILING_RATE)
    for n, path in enumerate(staged):
        path.rename(gone / f"{tag}-last-{n}")
    time.sleep(1.0)  # the watcher sees them go
    engine.dispose()
    return group_cpu_s({pid})[pid] - cpu_before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="files per burst")
    parser.add_argument("--bursts", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cxr-bench-watcher-"))
    for folder in ("inbox", "staging", "gone"):
        (root / folder).mkdir()
    files = sources(args.n * args.bursts)
    pg_url = create_pg_database()
    broker = redis.Redis.from_url(REDIS_URL)
    broker.flushdb()
    env = service_env(root, pg_url, REDIS_URL, CXR_LOG_LEVEL="WARNING")
    try:
        cli(["db", "upgrade"], env)
        with running(["watch"], env, root / "watch.log") as watcher:
            time.sleep(5)  # started and idle
            per_file_ms = []
            for b in range(args.bursts):
                chosen = files[b * args.n : (b + 1) * args.n]
                cpu_s = burst(chosen, root, pg_url, f"b{b}", watcher.pid)
                per_file_ms.append(cpu_s / len(chosen) * 1e3)
                print(f"burst {b + 1}: watcher {per_file_ms[-1]:.2f} ms CPU/file", flush=True)
    finally:
        drop_pg_database(pg_url)
        broker.flushdb()
        shutil.rmtree(root, ignore_errors=True)
    median = statistics.median(per_file_ms[1:] or per_file_ms)
    print(f"watcher CPU per file, median of bursts 2..{args.bursts}: {median:.2f} ms")


if __name__ == "__main__":
    main()
