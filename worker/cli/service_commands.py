"""``run``, ``watch``, ``worker`` and ``flower``: the long-running services."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from worker.cli.app import app
from worker.settings import Settings, get_settings

#: prometheus_client's variable (``worker.metrics.MULTIPROCESS_VARIABLE``), named here so
#: this module does not import prometheus_client before the folder is set.
MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
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
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="The worker's and watcher's logs on the terminal, not a file"
        ),
    ] = False,
) -> None:
    """Everything on one machine, no servers: migrations, a worker and the watcher.

    Uses the embedded defaults (SQLite and a filesystem broker under CXR_DATA_DIR) unless
    CXR_DATABASE_URL / CXR_BROKER_URL say otherwise. Shows a progress line and a summary;
    the logs go to <data_dir>/logs/run.log (--verbose: to the terminal). Ctrl-C stops cleanly.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from db import migrate
    from worker import service

    if inbox is not None and not inbox.expanduser().is_dir():
        # A typo would otherwise become an empty folder watched for ever.
        raise typer.BadParameter(
            f"{inbox} is not a folder; create it or check the path", param_hint="INBOX"
        )
    settings = _settings(inbox)
    log_file = None if verbose else settings.data_dir / "logs" / "run.log"
    service.configure_logging(settings.log_level, log_file)
    if log_file is not None:
        typer.echo(f"logs: {log_file}", err=True)
    try:
        migrate.upgrade(settings.db_url)
    except SQLAlchemyError as error:
        typer.echo(f"cannot open the worklist database {_safe_url(settings.db_url)}:", err=True)
        typer.echo(f"  {_first_line(error)}", err=True)
        raise typer.Exit(1) from error
    # Prefork with CXR_WORKER_CONCURRENCY processes (2) on every broker: one solo process
    # used one core, the slowest mode of all on a 2-core machine.
    argv = [sys.executable, "-m", "celery", "-A", "worker.celery_app"]
    argv += service.worker_argv(settings)
    os.environ[MULTIPROCESS_VARIABLE] = str(_metrics_folder(settings))
    from worker import metrics

    metrics.reset_multiprocess_dir()  # counts start at zero with each run
    os.environ[metrics.RESET_BY_PARENT] = "1"
    with contextlib.ExitStack() as closing:
        output = None if log_file is None else closing.enter_context(log_file.open("ab"))
        # Own session: Ctrl-C reaches only us, and we stop the worker once, warmly.
        worker_process = subprocess.Popen(
            argv, env=dict(os.environ), stdout=output, stderr=output, start_new_session=True
        )
        status = _supervise(settings, worker_process, exit_when_idle, log_file)
    raise typer.Exit(status)


def _supervise(
    settings: Settings,
    worker_process: subprocess.Popen[bytes],
    exit_when_idle: bool,
    log_file: Path | None,
) -> int:
    """Run the watcher (and the result deliverer) beside the worker until stopped; show the
    progress line, then the summary. Returns the exit status."""
    from worker import service
    from worker.cli.run_report import CountingIntake, RunProgress
    from worker.delivery import build_deliverer
    from worker.resources import get_session_factory

    stop = threading.Event()
    service.stop_on_signals(stop)
    counting = CountingIntake(service.build_intake(settings))
    progress = RunProgress(get_session_factory(), counting, sys.stdout)  # before any admission
    watcher = service.build_watcher(settings, counting)
    watcher_thread = threading.Thread(target=watcher.run, args=(stop,), name="watcher")
    watcher_thread.start()
    deliverer = build_deliverer(settings)  # None without a PACS: results stay in the outbox
    if deliverer is not None:
        threading.Thread(target=deliverer.run, args=(stop,), name="results", daemon=True).start()
    typer.echo(f"cxr-triage running: watching {settings.inbox_dir} (Ctrl-C stops)", err=True)
    status = 0
    idle_checks = 0
    problem = ""
    try:
        with progress:
            while not stop.wait(1.0):
                if worker_process.poll() is not None:
                    problem, status = f"the worker exited ({worker_process.returncode})", 1
                    break
                if not watcher_thread.is_alive():
                    problem, status = "the watcher stopped", 1
                    break
                progress.update()
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
    if problem:
        typer.echo(f"{problem}; stopping", err=True)
        if log_file is not None:
            typer.echo(f"the last lines of {log_file}:", err=True)
            typer.echo(_tail(log_file, 15), err=True)
    progress.print_summary()
    return status


def _metrics_folder(settings: Settings) -> Path:
    """Where prefork children write their metrics for the worker's ``/metrics`` to sum
    (prometheus_client's multiprocess mode): ``PROMETHEUS_MULTIPROC_DIR`` when the
    environment sets it, else ``<data_dir>/metrics``. Without it each pool process counted
    alone and the endpoint showed only the main process, which scores nothing."""
    return Path(os.environ.get(MULTIPROCESS_VARIABLE) or settings.data_dir / "metrics")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _first_line(error: BaseException) -> str:
    """The driver's own message, without SQLAlchemy's statement and background link."""
    original = getattr(error, "orig", None) or error
    return (str(original).strip().splitlines() or [type(original).__name__])[0]


def _tail(path: Path, lines: int) -> str:
    with path.open("rb") as stream:
        stream.seek(max(0, path.stat().st_size - 16384))
        text = stream.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


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
    # Before prometheus_client is first imported (it reads the variable then).
    os.environ[MULTIPROCESS_VARIABLE] = str(_metrics_folder(settings))
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
