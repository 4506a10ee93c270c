"""Capacity of the shared parts: PostgreSQL, the broker and the watcher, as worker
processes are added.

    python bench/bench_capacity.py [--processes 1,2,4,8,16,32] [--brokers redis,rabbitmq]
        [--files 600] [--per-node 4] [--model-ms 0] [--plot docs/capacity.png]

For each broker and each number of worker processes P: a private PostgreSQL cluster (with
pg_stat_statements) and a private broker (Redis, or a RabbitMQ node with its Prometheus
counters) that nothing else uses; ceil(P / per-node) real worker nodes (``cxr-triage
worker``, prefork, each on a host of its own in a private UTS namespace) whose model is
:class:`tests.fakes.FakeScorer` (``bench/fake_worker.py``: the 2 cores measure the shared
parts, not TensorFlow); one real ``cxr-triage watch``. FILES distinct 48 x 48 chest PNGs are
moved into the inbox at once; everything else is the product: admission, one task per
batch of 8, claims, staging, the record, the archive move, the results task (overlay), the
lease keepers.

Per point, from the drop until every queue is empty and every overlay written:
- files/s: FILES / (last row ``done`` - first row received);
- db ms/file: CPU time of every PostgreSQL server process (the bench's own connection
  excluded), per file; stmts/file: pg_stat_statements calls of the workers and the watcher;
  claim ms: mean execution time of the claim statements (pg_stat_statements); wait p50/p95:
  row received -> claimed;
- broker ms/file: CPU of the broker's processes; msgs/file: messages the broker received
  (RabbitMQ: rabbitmq_global_messages_received_total; Redis: LPUSH calls, the task
  messages, plus PUBLISH calls, the task events Flower reads);
- watcher ms/file and worker ms/file: CPU of those process trees, per file;
- idle: statements/s and broker CPU ms/s with every node doing nothing (the 6 s before
  the drop): what the nodes' lease keepers, heartbeats and polls cost the shared parts at
  rest (CPU in clock ticks of 10 ms: about 2 ms/s resolution).

Costs are the whole window's, idle ticks included (conservative). The machine is shared:
the load average is printed with each point.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kombu
import psycopg
import redis

from db import migrate
from tests.processes import CLI, own_host, rows, service_env
from tests.reliability.stack import small_pngs
from tests.support import wait_until
from tests.support.rabbitmq import PrivateRabbitMQ
from tests.support.servers import PrivatePostgres, PrivateRedis
from worker.broker import queue_depths
from worker.celery_app import QUEUES

BENCH = Path(__file__).resolve().parent
FAKE_WORKER = [sys.executable, str(BENCH / "fake_worker.py")]
TICK = os.sysconf("SC_CLK_TCK")
MONITOR_ROLE = "bench_monitor"  # the bench's own queries: left out of every figure


def cpu_s(pids: list[int], children: bool = False) -> float:
    """CPU seconds (user + system) of ``pids``; with ``children`` also their reaped
    children's (a PostgreSQL backend that exited is counted in the postmaster's)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
        if children:
            total += int(fields[13]) + int(fields[14])
    return total / TICK


def descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def tree_cpu_s(pid: int) -> float:
    """A process tree's CPU: the live processes' own, and the reaped ones' (in cutime)."""
    tree = descendants(pid)
    return cpu_s(tree[:1], children=True) + cpu_s(tree[1:], children=False)


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


class Postgres:
    """The private cluster, its bench database, and what its server processes cost."""

    def __init__(self) -> None:
        self.server = PrivatePostgres()
        self.server.start(
            "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all "
            "-c pg_stat_statements.max=1000 -c max_connections=400"
        )
        with psycopg.connect(self.server.admin_url, autocommit=True) as connection:
            connection.execute(f"CREATE ROLE {MONITOR_ROLE} LOGIN SUPERUSER")
        self.postmaster = int((self.server.data / "postmaster.pid").read_text().split()[0])

    def create(self, name: str) -> str:
        with psycopg.connect(self.server.admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            connection.execute(f'CREATE DATABASE "{name}"')
        url = self.server.url.rsplit("/", 1)[0] + f"/{name}"
        migrate.upgrade(url)
        with psycopg.connect(self._monitor(name), autocommit=True) as connection:
            connection.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        return url

    def _monitor(self, name: str) -> str:
        return f"postgresql://{MONITOR_ROLE}@127.0.0.1:{self.server.port}/{name}"

    def monitor(self, name: str) -> psycopg.Connection[Any]:
        return psycopg.connect(self._monitor(name), autocommit=True)

    def cpu_s(self, exclude: int) -> float:
        tree = [pid for pid in descendants(self.postmaster) if pid != exclude]
        return cpu_s(tree[:1], children=True) + cpu_s(tree[1:])

    def destroy(self) -> None:
        self.server.destroy()


class Broker:
    """A private Redis or RabbitMQ: its URL, CPU, message counters and queue depths."""

    def __init__(self, kind: str, folder: Path) -> None:
        self.kind = kind
        self.server: PrivateRedis | PrivateRabbitMQ
        if kind == "redis":
            folder.mkdir(parents=True, exist_ok=True)
            self.server = PrivateRedis(folder)
        else:
            self.server = PrivateRabbitMQ(prometheus=True)
        self.server.start()
        self.url = self.server.url

    def pids(self) -> list[int]:
        if isinstance(self.server, PrivateRedis):
            assert self.server.process is not None
            return [self.server.process.pid]
        return self.server.pids()

    def cpu_s(self) -> float:
        return cpu_s(self.pids(), children=True)

    def messages(self) -> dict[str, float]:
        """Cumulative counters: messages received (RabbitMQ), or LPUSH/PUBLISH/all calls."""
        if isinstance(self.server, PrivateRedis):
            stats = self.server.client().info("commandstats")
            calls = {name.removeprefix("cmdstat_"): float(v["calls"]) for name, v in stats.items()}
            return {
                "messages": calls.get("lpush", 0) + calls.get("publish", 0),
                "tasks": calls.get("lpush", 0),
                "commands": sum(calls.values()),
            }
        port = self.server.prometheus_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            text = reply.read().decode()
        counters: dict[str, float] = {}
        for line in text.splitlines():
            match = re.match(r"(rabbitmq_global_messages_\w+_total)(\{[^}]*\})? ([0-9.e+]+)", line)
            if match:
                counters[match[1]] = counters.get(match[1], 0.0) + float(match[3])
        return {
            "messages": counters.get("rabbitmq_global_messages_received_total", 0.0),
            "tasks": counters.get("rabbitmq_global_messages_routed_total", 0.0),
            "commands": counters.get("rabbitmq_global_messages_acknowledged_total", 0.0),
        }

    def depth(self) -> int:
        with kombu.Connection(self.url) as connection:
            return sum(queue_depths(connection, QUEUES).values())

    def reset(self) -> None:
        if isinstance(self.server, PrivateRedis):
            redis.Redis(port=self.server.port).flushall()

    def stop(self) -> None:
        if isinstance(self.server, PrivateRabbitMQ):
            self.server.destroy()
        else:
            self.server.stop()


@dataclass
class Point:
    broker: str
    processes: int
    nodes: int
    files: int
    files_per_s: float
    db_ms_per_file: float
    statements_per_file: float
    claim_ms: float
    wait_p50_s: float
    wait_p95_s: float
    broker_ms_per_file: float
    messages_per_file: float
    watcher_ms_per_file: float
    worker_ms_per_file: float
    idle_statements_per_s: float
    idle_broker_ms_per_s: float
    top_statements: list[tuple[int, float, str]]
    load: tuple[float, float]


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def statements(monitor: psycopg.Connection[Any]) -> list[tuple[int, float, str]]:
    """(calls, total ms, query) of the product's statements in this database."""
    return [
        (int(calls), float(total), str(query))
        for calls, total, query in monitor.execute(
            "SELECT calls, total_exec_time, query FROM pg_stat_statements s "
            "JOIN pg_roles r ON r.oid = s.userid "
            "WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND r.rolname <> %s ORDER BY calls DESC",
            (MONITOR_ROLE,),
        ).fetchall()
    ]


def is_claim(query: str) -> bool:
    return query.lstrip().upper().startswith(("UPDATE WORKLIST SET STATUS", "WITH MATES")) and (
        "claim_token" in query and "RETURNING" in query.upper() and "started_at" in query
    )


def point(
    broker: Broker, postgres: Postgres, processes: int, args: argparse.Namespace, root: Path
) -> Point:
    root.mkdir(parents=True)
    name = f"cap_{broker.kind}_{processes}"
    url = postgres.create(name)
    broker.reset()
    env = service_env(
        root,
        url,
        broker.url,
        CXR_BATCH_SIZE="8",
        CXR_WATCH_MODE="inotify",
        CXR_QUIET_PERIOD_S="0.5",
        CXR_RESCAN_INTERVAL_S="60",
    )
    (root / "inbox").mkdir()
    logs = root / "logs"
    logs.mkdir()
    burst = root / "burst"
    small_pngs(burst, args.files, size=48)
    nodes = math.ceil(processes / args.per_node)
    sizes = [processes // nodes + (1 if n < processes % nodes else 0) for n in range(nodes)]
    started: list[subprocess.Popen[bytes]] = []
    try:
        fake = [*FAKE_WORKER, "--model-ms", str(args.model_ms)]
        for n, size in enumerate(sizes):
            host = f"cap-node-{n}"
            command = [*own_host(host), *fake, "worker", "--concurrency", str(size)]
            started.append(start([*command, "--hostname", "worker@%h"], env, logs / f"{host}.log"))
        watcher = start([*own_host("cap-watch"), *CLI, "watch"], env, logs / "watch.log")
        started.append(watcher)
        for n, size in enumerate(sizes):
            log = logs / f"cap-node-{n}.log"
            wait_until(
                lambda log=log, size=size: f"ready: {size} of {size}" in log.read_text(),
                300,
                f"node {n} ready",
                [log],
            )
        wait_until(lambda: "watching inbox" in (logs / "watch.log").read_text(), 120, "watcher")
        workers = started[:-1]
        with postgres.monitor(name) as monitor:
            me = int(monitor.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
            time.sleep(1)
            monitor.execute("SELECT pg_stat_statements_reset()")
            idle_broker, idle_at = broker.cpu_s(), time.monotonic()
            time.sleep(6)
            idle_s = time.monotonic() - idle_at
            idle_calls = sum(c for c, _, _ in statements(monitor))
            idle_broker_s = broker.cpu_s() - idle_broker
            monitor.execute("SELECT pg_stat_statements_reset()")
            before = {
                "db": postgres.cpu_s(me),
                "broker": broker.cpu_s(),
                "watcher": tree_cpu_s(watcher.pid),
                "workers": sum(tree_cpu_s(w.pid) for w in workers),
            }
            counters = broker.messages()
            load_before = load_average()
            burst.rename(root / "inbox" / "burst")
            done_sql = "SELECT count(*) FROM worklist WHERE status = 'done'"
            wait_until(
                lambda: monitor.execute(done_sql).fetchone()[0] >= args.files,  # type: ignore[index]
                600,
                "every row done",
                list(logs.iterdir()),
                interval_s=0.25,
            )
            overlays = root / "data" / "overlays"
            wait_until(
                lambda: (
                    broker.depth() == 0 and sum(1 for _ in overlays.rglob("*.png")) >= args.files
                ),
                600,
                "every overlay written and the queues empty",
                list(logs.iterdir()),
                interval_s=0.5,
            )
            time.sleep(1)
            after = {
                "db": postgres.cpu_s(me),
                "broker": broker.cpu_s(),
                "watcher": tree_cpu_s(watcher.pid),
                "workers": sum(tree_cpu_s(w.pid) for w in workers),
            }
            messages = broker.messages()
            calls = statements(monitor)
        found = rows(url)
        assert len(found) == args.files and all(r.status == "done" for r in found)
        first = min(r.received_at for r in found)
        last = max(r.finished_at for r in found if r.finished_at)
        waits = sorted(
            (r.started_at - r.received_at).total_seconds() for r in found if r.started_at
        )
        claims = [(c, t) for c, t, q in calls if is_claim(q)]
        per_file = {k: (after[k] - before[k]) * 1e3 / args.files for k in after}
        return Point(
            broker=broker.kind,
            processes=processes,
            nodes=nodes,
            files=args.files,
            files_per_s=round(args.files / (last - first).total_seconds(), 1),
            db_ms_per_file=round(per_file["db"], 3),
            statements_per_file=round(sum(c for c, _, _ in calls) / args.files, 2),
            claim_ms=round(sum(t for _, t in claims) / max(1, sum(c for c, _ in claims)), 3),
            wait_p50_s=round(statistics.median(waits), 2),
            wait_p95_s=round(waits[int(0.95 * (len(waits) - 1))], 2),
            broker_ms_per_file=round(per_file["broker"], 3),
            messages_per_file=round((messages["messages"] - counters["messages"]) / args.files, 2),
            watcher_ms_per_file=round(per_file["watcher"], 3),
            worker_ms_per_file=round(per_file["workers"], 3),
            idle_statements_per_s=round(idle_calls / idle_s, 2),
            idle_broker_ms_per_s=round(idle_broker_s * 1e3 / idle_s, 1),
            top_statements=[(c, round(t, 1), " ".join(q.split())[:110]) for c, t, q in calls[:8]],
            load=(load_before, load_average()),
        )
    finally:
        stop_all(started)


COLUMNS = (
    ("broker", "broker", "{}"),
    ("processes", "procs", "{}"),
    ("nodes", "nodes", "{}"),
    ("files_per_s", "files/s", "{:.0f}"),
    ("db_ms_per_file", "db ms/file", "{:.2f}"),
    ("statements_per_file", "stmts/file", "{:.1f}"),
    ("claim_ms", "claim ms", "{:.2f}"),
    ("wait_p50_s", "wait p50 s", "{:.2f}"),
    ("broker_ms_per_file", "broker ms/file", "{:.2f}"),
    ("messages_per_file", "msgs/file", "{:.2f}"),
    ("watcher_ms_per_file", "watcher ms/file", "{:.2f}"),
    ("worker_ms_per_file", "worker ms/file", "{:.1f}"),
    ("idle_statements_per_s", "idle stmts/s", "{:.1f}"),
    ("idle_broker_ms_per_s", "idle broker ms/s", "{:.0f}"),
)


def table(points: list[Point]) -> str:
    header = "| " + " | ".join(label for _, label, _ in COLUMNS) + " | load |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 1)]
    for p in points:
        values = [fmt.format(getattr(p, key)) for key, _, fmt in COLUMNS]
        lines.append("| " + " | ".join(values) + f" | {p.load[0]:.1f}-{p.load[1]:.1f} |")
    return "\n".join(lines)


def plot(points: list[Point], path: Path, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("files_per_s", "files per second (all on 2 shared cores)"),
        ("db_ms_per_file", "PostgreSQL CPU per file (ms)"),
        ("statements_per_file", "SQL statements per file"),
        ("broker_ms_per_file", "broker CPU per file (ms)"),
    )
    figure, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for axis, (key, title) in zip(axes.flat, panels, strict=True):
        for kind, marker in (("redis", "o"), ("rabbitmq", "s")):
            series = [p for p in points if p.broker == kind]
            if series:
                axis.plot(
                    [p.processes for p in series],
                    [getattr(p, key) for p in series],
                    marker=marker,
                    label=kind,
                )
        axis.set_xscale("log", base=2)
        axis.set_xticks(sorted({p.processes for p in points}))
        axis.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axis.set_xlabel("worker processes")
        axis.set_title(title)
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
        axis.legend()
    loads = [p.load[0] for p in points]
    figure.suptitle(
        f"cxr-triage shared parts, fake model ({args.model_ms:g} ms per batch), {args.files} "
        f"files per point, {args.per_node} processes per node; load {min(loads):.1f}-"
        f"{max(loads):.1f} on 2 cores"
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", default="1,2,4,8,16,32")
    parser.add_argument("--brokers", default="redis,rabbitmq")
    parser.add_argument("--files", type=int, default=600)
    parser.add_argument("--per-node", type=int, default=4)
    parser.add_argument("--model-ms", type=float, default=0.0)
    parser.add_argument("--plot", type=Path, default=None, help="write the plot here")
    parser.add_argument("--json", type=Path, default=None, help="write the points here")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-capacity-"))
    points: list[Point] = []
    with ExitStack() as cleanup:
        postgres = Postgres()
        cleanup.callback(postgres.destroy)
        for kind in args.brokers.split(","):
            broker = Broker(kind, scratch / f"{kind}-server")
            try:
                for processes in (int(p) for p in args.processes.split(",")):
                    folder = scratch / f"{kind}-{processes}"
                    result = point(broker, postgres, processes, args, folder)
                    points.append(result)
                    print(json.dumps(asdict(result)), flush=True)
            finally:
                broker.stop()
    shutil.rmtree(scratch, ignore_errors=True)
    print(table(points))
    if args.json:
        args.json.write_text(json.dumps([asdict(p) for p in points], indent=1))
    if args.plot:
        plot(points, args.plot, args)


if __name__ == "__main__":
    main()
