"""``run``, ``watch``, ``worker`` and ``flower``: the long-running services."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from worker.cli.app import app
from worker.settings import Settings, get_settings

if TYPE_CHECKING:
    from pacs.receiver import Receiver

#: prometheus_client's variable (``worker.prometheus.MULTIPROCESS_VARIABLE``), named here so
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
    listen: Annotated[
        bool,
        typer.Option(
            "--listen", help="Also be the DICOM node: receive C-STOREs into the watched inbox"
        ),
    ] = False,
    listen_port: Annotated[
        int | None, typer.Option(help="With --listen: port (default CXR_LISTEN_PORT)")
    ] = None,
    listen_ae_title: Annotated[
        str | None, typer.Option(help="With --listen: AE title (default CXR_LISTEN_AE_TITLE)")
    ] = None,
) -> None:
    """Everything on one machine, no servers: migrations, a worker and the watcher
    (with --listen, the DICOM receiver too).

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
    receiver = None
    if listen:
        try:  # a setting it cannot use is said now, before anything starts
            receiver = service.build_receiver(
                settings, settings.inbox, port=listen_port, ae_title=listen_ae_title
            )
        except ValueError as error:
            raise typer.BadParameter(str(error)) from error
    log_file = None if verbose else settings.data_dir / "logs" / "run.log"
    service.configure_logging(settings.log_level, log_file)
    if log_file is not None:
        typer.echo(f"logs: {_shown(log_file)}")  # stdout, with every line of the run's report
    try:
        migrate.upgrade(settings.database_url)
    except SQLAlchemyError as error:
        typer.echo(
            f"cannot open the worklist database {_safe_url(settings.database_url)}:", err=True
        )
        typer.echo(f"  {_first_line(error)}", err=True)
        raise typer.Exit(1) from error
    # Prefork with CXR_WORKER_CONCURRENCY processes (2) on every broker: one solo process
    # used one core, the slowest mode of all on a 2-core machine.
    argv = [sys.executable, "-m", "celery", "-A", "worker.celery_app"]
    argv += service.worker_argv(settings)
    os.environ[MULTIPROCESS_VARIABLE] = str(_metrics_folder(settings))
    from worker import prometheus

    prometheus.reset_multiprocess_dir()  # counts start at zero with each run
    os.environ[prometheus.RESET_BY_PARENT] = "1"
    with contextlib.ExitStack() as closing:
        output = None if log_file is None else closing.enter_context(log_file.open("ab"))
        # Own session: Ctrl-C reaches only us, and we stop the worker once, warmly.
        worker_process = subprocess.Popen(
            argv, env=dict(os.environ), stdout=output, stderr=output, start_new_session=True
        )
        status = _supervise(settings, worker_process, exit_when_idle, log_file, receiver)
    raise typer.Exit(status)


def _supervise(
    settings: Settings,
    worker_process: subprocess.Popen[bytes],
    exit_when_idle: bool,
    log_file: Path | None,
    receiver: Receiver | None = None,
) -> int:
    """Run the watcher (and the result deliverer) beside the worker until stopped; show the
    progress line, then the summary. Returns the exit status.

    The run's own lines go to stdout through the progress display (on a terminal they print
    above the live line, never glued to it); what needs a person (the worker died) to stderr.
    """
    from worker import service
    from worker.cli.run_report import CountingIntake, RunProgress
    from worker.deliverers import start_pacs_threads
    from worker.resources import get_session_factory

    stop = threading.Event()
    service.stop_on_signals(stop)
    counting = CountingIntake(service.build_intake(settings))
    progress = RunProgress(get_session_factory(), counting, sys.stdout)  # before any admission
    watcher = service.build_watcher(settings, counting)
    service.record_watched_inbox(settings)
    watcher_thread = threading.Thread(target=watcher.run, args=(stop,), name="watcher")
    watcher_thread.start()
    status = 0
    problem = ""
    if receiver is not None:
        # A file the receiver wrote is complete by construction: straight to the watcher.
        receiver.on_received = watcher.admit_complete
        try:
            receiver.start()
        except OSError as error:  # the port is taken, or not ours to bind
            problem, status = f"the DICOM node cannot listen ({error.strerror or error})", 1
            receiver = None
            stop.set()
        else:
            progress.note(
                f"cxr-triage DICOM node {receiver.config.ae_title} on "
                f"{receiver.config.host}:{receiver.port}"
            )
    start_pacs_threads(settings, stop)  # delivery (and catch-up); none without a PACS
    progress.note(f"cxr-triage running: watching {_shown(settings.inbox)} (Ctrl-C stops)")
    idle_checks = 0
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
                        progress.note(_idle_message(service.folders_too_deep(settings.inbox)))
                        break
            else:  # Ctrl-C or SIGTERM: the warm shutdown can take a task's length
                progress.note("stopping: the worker finishes the task in hand")
    finally:
        if receiver is not None:
            receiver.stop()  # first: nothing is acknowledged that the watcher will not see
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
    progress.print_summary(service.folders_too_deep(settings.inbox))
    return status


def _shown(path: Path) -> str:
    """``path`` as the person at the terminal can use it: relative to where they are when it
    lies below (``cxr-triage-data/logs/run.log``), else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _idle_message(unread_folders: int) -> str:
    from worker.cli.run_report import too_deep_text

    if not unread_folders:
        return "inbox empty and every row final; stopping"
    return f"every row final, but {too_deep_text(unread_folders)}; stopping"


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
    """Watch the inbox: each new file, once stable, becomes a queued row, and each batch of
    up to CXR_BATCH_SIZE rows one task for the workers (production watcher).

    Start it on two machines for a standby: one watches, the other takes over within
    CXR_WATCHER_LEASE_S when the first dies (a lease row in the database)."""
    from worker import service

    settings = _settings(inbox)
    service.configure_logging(settings.log_level)
    stop = threading.Event()
    service.stop_on_signals(stop)
    service.record_watched_inbox(settings)
    beat = service.watcher_heartbeat(settings)
    try:
        service.run_watcher(settings, stop, beat)
    finally:
        beat.stop()


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
