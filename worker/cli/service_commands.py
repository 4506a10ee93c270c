"""``run``, ``watch``, ``worker`` and ``flower``: the long-running services."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from worker.cli.app import app
from worker.settings import Settings, get_settings

INBOX_ARGUMENT = typer.Argument(
    help="Folder to watch (default: CXR_INBOX, or <data_dir>/inbox)",
    file_okay=False,
)


def _settings(inbox: Path | None = None) -> Settings:
    """Settings, with a command-line inbox passed on to child processes via the environment."""
    if inbox is not None:
        os.environ["CXR_INBOX"] = str(inbox.expanduser().resolve())
    get_settings.cache_clear()
    try:
        return get_settings()
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error


@app.command()
def run(
    inbox: Annotated[Path | None, INBOX_ARGUMENT] = None,
    exit_when_idle: Annotated[
        bool, typer.Option(help="Stop once the inbox is empty and every row is final")
    ] = False,
) -> None:
    """Everything on one machine, no servers: migrations, a worker and the watcher.

    Uses the embedded defaults (SQLite and a filesystem broker under CXR_DATA_DIR) unless
    CXR_DATABASE_URL / CXR_BROKER_URL say otherwise. Ctrl-C stops cleanly.
    """
    from db import migrate
    from worker import service

    settings = _settings(inbox)
    service.configure_logging(settings.log_level)
    migrate.upgrade(settings.db_url)
    env = dict(os.environ)
    # Prefork with CXR_WORKER_CONCURRENCY processes (2) on every broker: one solo process
    # used one core, the slowest mode of all on a 2-core machine.
    argv = [sys.executable, "-m", "celery", "-A", "worker.celery_app"]
    argv += service.worker_argv(settings)
    # Own session: Ctrl-C reaches only us, and we stop the worker once, warmly.
    worker_process = subprocess.Popen(argv, env=env, start_new_session=True)
    stop = threading.Event()
    service.stop_on_signals(stop)
    watcher = service.build_watcher(settings)
    watcher_thread = threading.Thread(target=watcher.run, args=(stop,), name="watcher")
    watcher_thread.start()
    from worker.delivery import build_deliverer

    deliverer = build_deliverer(settings)  # None without a PACS: results stay in the outbox
    if deliverer is not None:
        threading.Thread(target=deliverer.run, args=(stop,), name="results", daemon=True).start()
    typer.echo(f"cxr-triage running: watching {settings.inbox_dir} (Ctrl-C stops)", err=True)
    status = 0
    idle_checks = 0
    try:
        while not stop.wait(1.0):
            if worker_process.poll() is not None:
                typer.echo("the worker exited; stopping", err=True)
                status = 1
                break
            if not watcher_thread.is_alive():
                status = 1
                break
            if exit_when_idle:
                idle_checks = idle_checks + 1 if service.is_idle(settings) else 0
                if idle_checks >= 3:
                    typer.echo("inbox empty and every row final; stopping", err=True)
                    break
    finally:
        stop.set()
        watcher_thread.join(timeout=30)
        if worker_process.poll() is None:
            worker_process.terminate()  # SIGTERM: Celery's warm shutdown
            try:
                worker_process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker_process.kill()
                worker_process.wait()
    raise typer.Exit(status)


@app.command()
def watch(inbox: Annotated[Path | None, INBOX_ARGUMENT] = None) -> None:
    """Watch the inbox and send one task per new stable file (production watcher)."""
    from worker import service

    settings = _settings(inbox)
    service.configure_logging(settings.log_level)
    stop = threading.Event()
    service.stop_on_signals(stop)
    service.build_watcher(settings).run(stop)


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="Worker processes (default CXR_WORKER_CONCURRENCY)")
    ] = None,
    pool: Annotated[str | None, typer.Option(help="prefork (default) or solo")] = None,
    queues: Annotated[
        str | None, typer.Option(help="Comma-separated queues, in consumption order")
    ] = None,
    hostname: Annotated[str | None, typer.Option(help="Celery node name")] = None,
) -> None:
    """Start a Celery worker with acks-late, prefetch 1 and both triage queues."""
    settings = _settings()
    # Prefork children write their metrics here for the main process to sum; it must be
    # set before prometheus_client is first imported.
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(settings.data_dir / "metrics"))
    from worker import service
    from worker.celery_app import app as celery_app
    from worker.phi_logging import install_phi_guard

    install_phi_guard()  # before Celery's own logging set-up (which installs it again)
    argv = service.worker_argv(
        settings, pool=pool, concurrency=concurrency, queues=queues, hostname=hostname
    )
    celery_app.worker_main(argv)


@app.command()
def flower(
    port: Annotated[int | None, typer.Option(help="Port (default CXR_FLOWER_PORT)")] = None,
    address: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Allow no basic auth (only on 127.0.0.1)")
    ] = False,
) -> None:
    """Start Flower on the broker, protected by basic auth from CXR_FLOWER_BASIC_AUTH."""
    from worker.celery_app import app as celery_app
    from worker.phi_logging import install_phi_guard

    install_phi_guard()

    settings = _settings()
    if settings.flower_basic_auth is not None:
        # Through the environment, so the password never shows in the process list.
        os.environ["FLOWER_BASIC_AUTH"] = settings.flower_basic_auth.get_secret_value()
    elif not (no_auth and address in ("127.0.0.1", "localhost", "::1")):
        raise typer.BadParameter(
            "set CXR_FLOWER_BASIC_AUTH=user:password (or --no-auth on 127.0.0.1)"
        )
    celery_app.start(["flower", f"--port={port or settings.flower_port}", f"--address={address}"])
