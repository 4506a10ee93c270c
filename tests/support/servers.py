"""Throwaway servers for the fault-injection suite: a Redis and a PostgreSQL cluster started
per test on free ports, stopped and started again by the tests (the shared servers on
127.0.0.1:5432/6379 are never touched)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import psycopg
import redis

from tests.support import free_port, wait_until

PG_BIN = Path(
    os.environ.get("CXR_TEST_PG_BIN")
    or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), Path())
)


class PrivateRedis:
    """A throwaway redis-server on a free port; ``stop()``/``start()`` simulate an outage."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.folder / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxmemory-policy",
                "noeviction",
                "--daemonize",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_until(self.ping, 20, f"redis on port {self.port}")

    def ping(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)  # an outage, not a clean shutdown
            self.process.wait(timeout=10)
        self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


class PrivatePostgres:
    """A throwaway PostgreSQL cluster (initdb as the ``postgres`` OS user when run as root)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="cxr-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            shutil.chown(self.root, "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run(
            [*self._as, str(PG_BIN / tool), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, f"{tool}: {result.stdout[-2000:]}{result.stderr[-2000:]}"

    def start(self, extra_options: str = "") -> None:
        """``extra_options``: more ``-c name=value`` server settings (the capacity bench
        loads pg_stat_statements)."""
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            f"-c max_connections=200 {extra_options}"
        )
        log = str(self.root / "log")
        data = str(self.data)
        self._run("pg_ctl", "-D", data, "-o", options, "-l", log, "-w", "-t", "60", "start")
        wait_until(self.ready, 60, f"postgres on port {self.port}")

    def ready(self) -> bool:
        try:
            with psycopg.connect(self.admin_url, connect_timeout=1) as connection:
                connection.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def stop(self) -> None:
        """Immediate shutdown: every connection is cut, as when the server goes away."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                [*self._as, str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "i", "stop"],
                capture_output=True,
                timeout=60,
                check=False,
            )
        shutil.rmtree(self.root, ignore_errors=True)
