"""Real service processes for the tests: the CLI's worker, watcher and run commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select

from db.engine import make_engine, make_session_factory
from db.models import FINAL_STATUSES, WorklistEntry

CLI = [sys.executable, "-m", "worker.cli"]


def service_env(
    root: Path, database_url: str, broker_url: str | None, **extra: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    env.update(
        CXR_DATA_DIR=str(root / "data"),
        CXR_INBOX=str(root / "inbox"),
        CXR_ARCHIVE=str(root / "archive"),
        CXR_QUARANTINE=str(root / "quarantine"),
        CXR_DATABASE_URL=database_url,
        CXR_QUIET_PERIOD_S="0.5",
        CXR_RESCAN_INTERVAL_S="5",
        CXR_LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    if broker_url:
        env["CXR_BROKER_URL"] = broker_url
    env.update(extra)
    return env


def cli(
    args: list[str], env: dict[str, str], timeout: float = 300, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``cxr-triage ARGS``, which must succeed; ``input`` is its standard input (a password)."""
    result = subprocess.run(
        [*CLI, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        input=input,
    )
    assert result.returncode == 0, f"cxr-triage {' '.join(args)}: {result.stderr[-3000:]}"
    return result


def cli_json(args: list[str], env: dict[str, str]) -> Any:
    return json.loads(cli(args, env).stdout)


def own_host(hostname: str) -> list[str]:
    """A command prefix that runs the rest under ``hostname``, in a private UTS namespace
    (Linux, root): a node of its own as far as host names go (claims, readiness markers,
    Celery node names), sharing this machine's network, database, broker and share."""
    return ["unshare", "--uts", "sh", "-c", f'hostname {hostname} && exec "$@"', "sh"]


@contextmanager
def running(
    args: list[str], env: dict[str, str], log: Path, prefix: Sequence[str] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``cxr-triage ARGS`` (after ``prefix``, e.g. :func:`own_host`) in its own process
    group; SIGTERM it (warm stop) at the end."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*prefix, *CLI, *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def rows(database_url: str) -> list[WorklistEntry]:
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            return list(session.scalars(select(WorklistEntry).order_by(WorklistEntry.id)))
    finally:
        engine.dispose()


def all_final(database_url: str, expected: int) -> Callable[[], bool]:
    def check() -> bool:
        found = rows(database_url)
        return len(found) >= expected and all(r.status in FINAL_STATUSES for r in found)

    return check


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() or p.is_symlink())
