"""RabbitMQ for the tests: a virtual host of its own on the shared broker, or a throwaway
node on free ports that a test may kill and start again (an outage).

The shared broker (127.0.0.1:5672, guest/guest; ``.ci/run`` starts it) is only ever given
virtual hosts named ``cxr-test-<random>``, deleted afterwards with everything in them: other
users' queues are never touched, and a test's queues never outlive it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import kombu

from tests.support import free_port, wait_until

#: The shared broker's management credentials and address (``rabbitmqctl`` reaches it).
AMQP_BASE = os.environ.get("CXR_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672")
RABBITMQ_USER = "guest"


def _ctl(*args: str, node: str | None = None) -> None:
    command = ["rabbitmqctl", *(["-n", node] if node else []), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"{' '.join(command)}: {result.stdout}{result.stderr}"


@contextmanager
def rabbitmq_vhost(base: str = AMQP_BASE, node: str | None = None) -> Iterator[str]:
    """A fresh virtual host on the broker; yields its ``amqp://`` URL; deletes it after."""
    vhost = f"cxr-test-{secrets.token_hex(4)}"
    _ctl("add_vhost", vhost, node=node)
    try:
        _ctl("set_permissions", "-p", vhost, RABBITMQ_USER, ".*", ".*", ".*", node=node)
        yield f"{base}/{vhost}"
    finally:
        _ctl("delete_vhost", vhost, node=node)


def reachable(url: str) -> bool:
    try:
        with kombu.Connection(url, connect_timeout=1) as connection:
            connection.ensure_connection(max_retries=0)
        return True
    except Exception:  # refused, reset, not yet accepting logins  # noqa: BLE001
        return False


class PrivateRabbitMQ:
    """A throwaway RabbitMQ node (its own name, ports, data folder and log), as the shared
    one but private: ``stop()`` SIGKILLs it (a crash, not a clean shutdown) and ``start()``
    brings it back on the same data, where durable quorum queues keep their messages.

    ``rabbitmq-server`` drops to the ``rabbitmq`` user, so the folder is handed to it; the
    Erlang cookie is the package's (``HOME=/var/lib/rabbitmq``)."""

    def __init__(self, prometheus: bool = False) -> None:
        """``prometheus``: also serve the node's counters (rabbitmq_prometheus) on
        ``prometheus_port`` (the capacity bench counts messages with them)."""
        self.root = Path(tempfile.mkdtemp(prefix="cxr-rabbitmq-", dir="/tmp"))
        self.port = free_port()
        self.dist_port = free_port()
        self.prometheus_port = free_port() if prometheus else None
        self.node = f"cxr-test-{secrets.token_hex(4)}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        config = f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users = none\n"
        plugins = "[]"
        if self.prometheus_port is not None:
            config += f"prometheus.tcp.port = {self.prometheus_port}\n"
            config += "prometheus.tcp.ip = 127.0.0.1\n"
            plugins = "[rabbitmq_prometheus]"
        (self.root / "rabbitmq.conf").write_text(config)
        (self.root / "enabled_plugins").write_text(f"{plugins}.\n")
        if os.geteuid() == 0:
            shutil.chown(self.root, "rabbitmq")
            for path in self.root.iterdir():
                shutil.chown(path, "rabbitmq")
        self.process: subprocess.Popen[bytes] | None = None

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        env.update(
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.root / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.root / "log"),
            RABBITMQ_CONFIG_FILE=str(self.root / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.root / "enabled_plugins"),
            RABBITMQ_PID_FILE=str(self.root / "pid"),
            RABBITMQ_CONF_ENV_FILE="/dev/null",
            HOME="/var/lib/rabbitmq",
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        return env

    def start(self) -> None:
        log = (self.root / "server.log").open("ab")
        self.process = subprocess.Popen(
            ["rabbitmq-server"],
            env=self._env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its Erlang VM and helpers die with it
        )
        log.close()
        wait_until(lambda: reachable(self.url), 90, f"rabbitmq on port {self.port}")

    def pids(self) -> list[int]:
        """The node's processes (its start script, the Erlang VM): ``su`` puts them in a
        session of their own, so they are found by the node name in their environment."""
        marker = f"RABBITMQ_NODENAME={self.node}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    def stop(self) -> None:
        """SIGKILL the whole node: an outage, nothing flushed, no goodbye to clients."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        if self.process is not None:
            self.process.wait(timeout=20)
        wait_until(lambda: not self.pids() and not reachable(self.url), 20, "rabbitmq gone")
        self.process = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
