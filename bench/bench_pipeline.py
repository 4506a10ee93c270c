"""End-to-end throughput and latency of the worker on Redis + PostgreSQL, next to the bare
decode+model throughput on the same machine.

    python bench/bench_pipeline.py --n 500 [--bursts 3] [--real 60] [--only-real] [--model DIR]

1. bare: ``load_scorable`` (with the worker's reduced decode) + ``Classifier.predict`` on
   the first N files in batches of
   ``CXR_BATCH_SIZE`` (8), one process, all cores, graphs traced beforehand (as a worker does
   at start-up); the better of two runs: the ceiling.
2. pipeline: a throwaway PostgreSQL database and Redis db 14, ``cxr-triage watch`` and
   ``cxr-triage worker --concurrency 2``; N distinct dataset JPEGs dropped at once, three
   times (new files each time, after the previous burst's results are written); the median.
   files/s = N / (last finished_at - first received_at); latency = finished_at - received_at
   (received_at is when the watcher found the file stable). The deferred results (a Grad-CAM
   overlay per file) run after the triage work: ``results_done_s`` is when the last overlay
   was written, counted from the same first received_at. ``cpu_ms_per_file``: CPU time of
   the watcher and worker processes (all of the worker's pool) from the drop until the last
   row is final, per file: the work the pipeline does, which a loaded machine inflates far
   less than the wall-clock ratio (PostgreSQL and Redis not included).
3. idle: single files dropped one at a time on the idle system; latency p95.
4. message floor: N triage tasks for rows that do not exist, through the same worker: what
   Celery (with the task events Flower needs), Redis and the claim cost per message with no
   image work at all. A task carries a batch of up to ``CXR_BATCH_SIZE`` rows, so the
   pipeline's bound is about this figure times the batch size.
5. real-size mix (``--real N``, default 60; 0 skips it): N different 2,500 x 2,000 16-bit
   DICOMs made here (``bench/real_size.py``: a quarter each uncompressed, JPEG Lossless,
   JPEG 2000, JPEG Baseline 8-bit), dropped at once, end to end against their own bare
   figure: the worker's decode (``load_scorable`` with the reduced path) + model in 2
   processes (one model thread each, as 2 worker processes run), the better of two passes.
   Twice: on Redis + PostgreSQL (``watch`` + ``worker --concurrency 2``), and in the embedded
   default (``cxr-triage run``: SQLite and the filesystem broker). Each mode starts fresh and
   drops the files only once ``status --ready`` would say ready (:mod:`worker.readiness`).

Without ``--model`` and without a shipped model it uses an untrained network of the shipped
architecture (same compute, meaningless scores).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis

from tests.conftest import create_pg_database, drop_pg_database
from tests.datasets import FULL_DATASET, SAMPLE_DIR
from tests.processes import all_final, cli, rows, running, service_env
from tests.support import wait_until
from worker import readiness
from worker.celery_app import BACKFILL_QUEUE, LIVE_QUEUE

#: Redis db 14 unless CXR_TEST_REDIS_DB names another (engineers sharing a Redis each own one).
REDIS_URL = f"redis://127.0.0.1:6379/{os.environ.get('CXR_TEST_REDIS_DB', '14')}"


def model_directory(requested: str | None, scratch: Path) -> Path:
    from model.card import SHIPPED_DIR
    from model.network import DEFAULT_WIDTHS
    from model.train import TrainConfig
    from tests.models import save_untrained_model

    if requested:
        return Path(requested)
    if (SHIPPED_DIR / "model_card.json").is_file():
        return SHIPPED_DIR
    size = TrainConfig.__dataclass_fields__["input_size"].default
    print(f"no shipped model: untrained {size}px network of the shipped architecture")
    return save_untrained_model(scratch, size, DEFAULT_WIDTHS)


def sources(n: int) -> list[Path]:
    """``n`` training films spread over the full dataset (``CXR_TEST_DATASET`` or beside the
    repository), else over the committed test sample."""
    root = FULL_DATASET.path if FULL_DATASET.present() else SAMPLE_DIR
    files = sorted((root / "train").rglob("*.jpeg"))
    step = max(1, len(files) // n)
    return files[::step][:n]


def bare_throughput(model: Path, files: list[Path], batch: int = 8) -> float:
    from ingest import load_scorable
    from model.predict import Classifier

    classifier = Classifier.load(model)
    classifier.warm_up(batch)
    side = classifier.card.decode_min_side  # the worker's decode (ingest.reduced)
    started = time.perf_counter()
    for i in range(0, len(files), batch):
        classifier.predict(
            [load_scorable(p, min_side=side)[0].pixels for p in files[i : i + batch]]
        )
    return len(files) / (time.perf_counter() - started)


_BARE: Any = None  # the classifier of one bare pool process


def _bare_init(model: str, batch: int, threads: int) -> None:
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)  # before TensorFlow is imported
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    from model.predict import Classifier

    global _BARE
    _BARE = Classifier.load(Path(model))
    _BARE.warm_up(batch)


def _bare_batch(paths: list[str]) -> int:
    from ingest import load_scorable

    side = _BARE.card.decode_min_side
    _BARE.predict([load_scorable(Path(p), min_side=side)[0].pixels for p in paths])
    return len(paths)


def bare_parallel(model: Path, files: list[Path], processes: int = 2, batch: int = 8) -> float:
    """Files/s of the worker's decode + model in ``processes`` processes (one model thread
    each, as the worker's pool processes on 2 cores), batches of ``batch``; the better of two
    passes (the first also pages the files in)."""
    threads = max(1, (os.cpu_count() or 1) // processes)
    batches = [[str(p) for p in files[i : i + batch]] for i in range(0, len(files), batch)]
    context = multiprocessing.get_context("spawn")
    best = 0.0
    with context.Pool(
        processes, initializer=_bare_init, initargs=(str(model), batch, threads)
    ) as pool:
        pool.map(time.sleep, [3.0] * processes, chunksize=1)  # both loaded before timing
        for _ in range(2):
            started = time.perf_counter()
            pool.map(_bare_batch, batches, chunksize=1)
            best = max(best, len(files) / (time.perf_counter() - started))
    return best


def real_pipeline(model: Path, files: list[Path], root: Path, *, embedded: bool) -> dict[str, Any]:
    """One burst of the real-size files through fresh services: Redis + PostgreSQL with
    ``watch`` and ``worker --concurrency 2``, or the embedded ``run``."""
    work = root / ("real-embedded" if embedded else "real-redis")
    (work / "inbox").mkdir(parents=True)
    if embedded:
        url = f"sqlite:///{work / 'data' / 'worklist.sqlite3'}"
        env = service_env(work, url, None, CXR_MODEL_PATH=str(model), CXR_LOG_LEVEL="WARNING")
        del env["CXR_DATABASE_URL"]  # the embedded defaults under CXR_DATA_DIR
        env.pop("CXR_BROKER_URL", None)
        commands = [["run"]]
    else:
        url = create_pg_database()
        redis.Redis.from_url(REDIS_URL).flushdb()
        env = service_env(work, url, REDIS_URL, CXR_MODEL_PATH=str(model), CXR_LOG_LEVEL="WARNING")
        cli(["db", "upgrade"], env)
        commands = [["worker", "--concurrency", "2"], ["watch"]]
    logs = [work / f"{command[0]}.log" for command in commands]
    try:
        with ExitStack() as stack:
            for command, log in zip(commands, logs, strict=True):
                stack.enter_context(running(command, env, log))
            wait_until(lambda: readiness.check(work / "data").ready, 600, "a ready worker", logs)
            result = burst(files, work, url, logs, 0)
        found = rows(url)
    finally:
        if not embedded:
            drop_pg_database(url)
            redis.Redis.from_url(REDIS_URL).flushdb()
    statuses = sorted({r.status.value for r in found})
    return {
        "files_per_s": round(result.files_per_s, 2),
        "latency_median_s": round(statistics.median(result.latencies), 1),
        "results_done_s": round(result.results_done_s, 1),
        "statuses": {s: sum(r.status.value == s for r in found) for s in statuses},
    }


def message_floor(n: int) -> float:
    """Tasks/s for ``n`` triage tasks whose rows do not exist (the worker must be running)."""
    from worker.celery_app import LIVE_QUEUE
    from worker.tasks import triage

    broker = redis.Redis.from_url(REDIS_URL)
    started = time.perf_counter()
    with triage.app.producer_or_acquire() as producer:
        for entry_id in range(10**9, 10**9 + n):
            triage.apply_async(args=(entry_id,), queue=LIVE_QUEUE, producer=producer)
    while broker.llen(LIVE_QUEUE) or broker.hlen("unacked"):
        time.sleep(0.01)
    return n / (time.perf_counter() - started)


def overlays_written(folder: Path, n: int, timeout_s: float) -> list[Path]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        written = list(folder.glob("*.png")) if folder.is_dir() else []
        if len(written) >= n:
            return written
        time.sleep(0.2)
    raise TimeoutError(f"only {len(written)} of {n} overlays after {timeout_s:.0f} s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass(frozen=True)
class Burst:
    files_per_s: float
    latencies: list[float]
    results_done_s: float
    cpu_ms_per_file: float  # watcher + worker processes, from the drop to the last row final
    watcher_cpu_ms_per_file: float  # the watcher's share of it


def group_cpu_s(groups: set[int]) -> dict[int, float]:
    """CPU seconds (user + system) of the live processes in each of these process groups
    (Linux ``/proc``): the watcher, and the worker with its pool, each started in a group of
    its own. A figure of work done, which a loaded machine inflates far less than wall time."""
    ticks = dict.fromkeys(groups, 0)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) in groups:  # pgrp; then utime, stime at 11, 12
            ticks[int(fields[2])] += int(fields[11]) + int(fields[12])
    return {group: n / os.sysconf("SC_CLK_TCK") for group, n in ticks.items()}


def burst(
    files: list[Path],
    root: Path,
    pg_url: str,
    logs: list[Path],
    done_before: int,
    results: bool = True,
    groups: tuple[int, int] | None = None,
) -> Burst:
    """Drop ``files`` into the inbox at once (renamed in from a staging folder on the same
    disk, as a PACS export finishes), wait for their rows and (``results``) overlays.
    ``groups``: the worker's and the watcher's process groups, whose CPU time is counted
    (NaN without)."""
    staging, inbox = root / "staging", root / "inbox"
    staging.mkdir(exist_ok=True)
    for i, path in enumerate(files, start=done_before):
        shutil.copyfile(path, staging / f"{i:05d}{path.suffix}")
    cpu_before = group_cpu_s(set(groups or ()))
    for path in sorted(staging.iterdir()):
        path.rename(inbox / path.name)
    total = done_before + len(files)
    wait_until(all_final(pg_url, total), 3600, "all rows final", logs)
    cpu_after = group_cpu_s(set(groups or ()))
    cpu_s = {group: cpu_after[group] - cpu_before[group] for group in cpu_after}
    done = sorted(rows(pg_url), key=lambda r: r.id)[done_before:]
    first = min(r.received_at for r in done)
    last = max(r.finished_at for r in done if r.finished_at)
    results_done_s = float("nan")
    if results:
        scored = sum(r.status.value == "done" for r in rows(pg_url))  # a rejected row has none
        overlays = overlays_written(root / "data" / "overlays", scored, 600)
        results_done_s = max(p.stat().st_mtime for p in overlays) - first.timestamp()
    return Burst(
        files_per_s=len(files) / (last - first).total_seconds(),
        latencies=[(r.finished_at - r.received_at).total_seconds() for r in done],  # type: ignore[operator]
        results_done_s=results_done_s,
        cpu_ms_per_file=sum(cpu_s.values()) / len(files) * 1e3 if groups else float("nan"),
        watcher_cpu_ms_per_file=cpu_s[groups[1]] / len(files) * 1e3 if groups else float("nan"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="files per burst")
    parser.add_argument("--bursts", type=int, default=3, help="bursts, each of new files")
    parser.add_argument("--model", default=None)
    parser.add_argument("--idle-files", type=int, default=10)
    parser.add_argument(
        "--triage-only",
        action="store_true",
        help="the worker does not consume the results queue: triage without Grad-CAM/overlays",
    )
    parser.add_argument("--real", type=int, default=60, help="real-size DICOMs (0: none)")
    parser.add_argument("--only-real", action="store_true", help="skip the small-JPEG bursts")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="cxr-bench-"))
    (root / "model").mkdir()
    model = model_directory(args.model, root / "model")
    os.environ["CXR_BROKER_URL"] = REDIS_URL  # for message_floor's sends, before any import
    report: dict[str, Any] = {}
    if not args.only_real:
        report.update(small_bursts(args, root, model))
    if args.real:
        report["real"] = real_mix(args.real, root, model)
    print(json.dumps(report, indent=2))
    shutil.rmtree(root, ignore_errors=True)


def real_mix(n: int, root: Path, model: Path) -> dict[str, Any]:
    from real_size import ENCODINGS, build_mix

    started = time.perf_counter()
    files = build_mix(sources(n), root / "real-source")
    print(f"real-size mix: {n} files built in {time.perf_counter() - started:.0f} s")
    bare = bare_parallel(model, files)
    print(f"real-size bare decode+model, 2 processes: {bare:.2f} files/s")
    report: dict[str, Any] = {
        "n": n,
        "size": "2500 x 2000, 16-bit (baseline 8-bit)",
        "encodings": list(ENCODINGS),
        "megabytes": round(sum(p.stat().st_size for p in files) / 1e6, 1),
        "bare_files_per_s_2_processes": round(bare, 2),
    }
    for name, embedded in (("redis_postgresql", False), ("embedded_run", True)):
        result = real_pipeline(model, files, root, embedded=embedded)
        result["vs_bare"] = round(result["files_per_s"] / bare, 3)
        print(f"real-size {name}: {result['files_per_s']:.2f} files/s ({result['vs_bare']:.0%})")
        report[name] = result
    return report


def small_bursts(args: argparse.Namespace, root: Path, model: Path) -> dict[str, Any]:
    files = sources(args.n * args.bursts + args.idle_files)
    idle_files = files[args.n * args.bursts :]
    bare = max(bare_throughput(model, files[: args.n]) for _ in range(2))  # the better of two
    print(f"bare decode+model: {bare:.1f} img/s")

    # --triage-only: the worker leaves the results queue alone (its tasks wait in Redis), so
    # the bursts show what the deferred Grad-CAM/overlay work takes from triage.
    queues = ["--queues", f"{LIVE_QUEUE},{BACKFILL_QUEUE}"] if args.triage_only else []
    pg_url = create_pg_database()
    redis.Redis.from_url(REDIS_URL).flushdb()
    env = service_env(root, pg_url, REDIS_URL, CXR_MODEL_PATH=str(model), CXR_LOG_LEVEL="WARNING")
    inbox = root / "inbox"
    inbox.mkdir()
    try:
        cli(["db", "upgrade"], env)
        logs = [root / "worker.log", root / "watch.log"]
        with (
            running(["worker", "--concurrency", "2", *queues], env, logs[0]) as worker,
            running(["watch"], env, logs[1]) as watcher,
        ):
            groups = (worker.pid, watcher.pid)  # each leads its own group
            data = root / "data"
            wait_until(lambda: readiness.check(data).ready, 600, "a ready worker", logs)
            bursts = []
            for b in range(args.bursts):
                chosen = files[b * args.n : (b + 1) * args.n]
                bursts.append(
                    burst(
                        chosen,
                        root,
                        pg_url,
                        logs,
                        b * args.n,
                        results=not args.triage_only,
                        groups=groups,
                    )
                )
                print(
                    f"burst {b + 1}: {bursts[-1].files_per_s:.1f} files/s, "
                    f"{bursts[-1].cpu_ms_per_file:.2f} ms CPU/file (watcher + worker; "
                    f"watcher {bursts[-1].watcher_cpu_ms_per_file:.2f})"
                )
            idle: list[float] = []
            for i, path in enumerate(idle_files):
                time.sleep(1.0)
                shutil.copyfile(path, inbox / f"idle-{i}.jpeg.part")
                (inbox / f"idle-{i}.jpeg.part").rename(inbox / f"idle-{i}.jpeg")
                expected = args.n * args.bursts + i + 1
                wait_until(all_final(pg_url, expected), 120, "idle file", logs)
                row = max(rows(pg_url), key=lambda r: r.id)
                idle.append((row.finished_at - row.received_at).total_seconds())  # type: ignore[operator]
            floor = message_floor(args.n)
        statuses = {r.status.value for r in rows(pg_url)}
    finally:
        drop_pg_database(pg_url)
        redis.Redis.from_url(REDIS_URL).flushdb()
    throughput = statistics.median(b.files_per_s for b in bursts)
    latencies = [latency for b in bursts for latency in b.latencies]
    return {
        "n": args.n,
        "bursts": args.bursts,
        "bare_img_per_s": round(bare, 1),
        "pipeline_files_per_s_each_burst": [round(b.files_per_s, 1) for b in bursts],
        "pipeline_files_per_s_median": round(throughput, 1),
        "pipeline_vs_bare": round(throughput / bare, 3),
        "burst_latency_median_s": round(statistics.median(latencies), 2),
        "burst_latency_p95_s": round(percentile(latencies, 0.95), 2),
        "results_done_s_each_burst": [round(b.results_done_s, 1) for b in bursts],
        "cpu_ms_per_file_each_burst": [round(b.cpu_ms_per_file, 2) for b in bursts],
        "watcher_cpu_ms_per_file_each_burst": [round(b.watcher_cpu_ms_per_file, 2) for b in bursts],
        # --idle-files 0 skips the idle drops (there is no latency to report then)
        "idle_latency_median_s": round(statistics.median(idle), 3) if idle else None,
        "idle_latency_p95_s": round(percentile(idle, 0.95), 3) if idle else None,
        "message_floor_tasks_per_s": round(floor, 1),
        "statuses": sorted(statuses),
        "workers": 2,
        "broker": "redis",
        "database": "postgresql",
    }


if __name__ == "__main__":
    main()
