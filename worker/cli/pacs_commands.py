"""``pacs-send`` and ``deliver``: the results' way to the PACS, for operators and services."""

from __future__ import annotations

import threading
from typing import Annotated

import typer

from worker.cli.app import app
from worker.settings import get_settings

REBUILDING = "rebuilding"  # result_objects.reason while the worker writes them again


@app.command("pacs-send")
def pacs_send(
    row: Annotated[
        int | None, typer.Option(help="Re-send this worklist row's SR and SC, even if stored")
    ] = None,
) -> None:
    """Re-send result objects now: every `failed` one (default), or one row's.

    Objects already stored are never sent again unless a row is named; a named row's objects
    without a file (pruned, lost, never written) are rebuilt by the worker first. The delivery loop
    (`deliver`, or `run`) retries pending objects by itself; this is for what it gave up on,
    once the cause is fixed.
    """
    from db.models import utcnow
    from db.results import requeue
    from worker.delivery import build_deliverer
    from worker.resources import get_session_factory

    get_settings.cache_clear()
    deliverer = build_deliverer(get_settings())
    if deliverer is None:
        typer.echo("no PACS configured: set CXR_PACS_HOST (and port, AE title)", err=True)
        raise typer.Exit(2)
    if row is not None and _rebuild(row):
        typer.echo(f"row {row}: results without a file are rebuilt by the worker, then sent")
    with get_session_factory().begin() as session:
        count = requeue(session, utcnow(), entry_id=row, include_stored=row is not None)
    typer.echo(f"{count} object(s) to send to {deliverer.node}", err=True)
    stored = failed = 0
    while True:
        report = deliverer.deliver_once()
        stored, failed = stored + report.stored, failed + report.failed
        if report.error:
            typer.echo(f"cxr-triage pacs-send: {report.error}", err=True)
            raise typer.Exit(1)
        if report.attempted == 0 or report.retrying:
            break
    typer.echo(f"stored {stored} object(s) on {deliverer.node}; {failed} failed")
    if failed or report.retrying:
        raise typer.Exit(1)


def _rebuild(entry_id: int) -> bool:
    """Objects of the row with no file in the outbox (pruned, lost, never written): mark them
    ``failed`` (``rebuilding``) and send the results task, which writes them again from the
    archived original; they become ``pending`` then. True when a rebuild was requested."""
    from pathlib import Path

    from db.models import utcnow
    from db.results import mark_attempt, objects_of
    from worker.resources import get_session_factory
    from worker.tasks import enqueue_publish

    with get_session_factory().begin() as session:
        objects = objects_of(session, [entry_id]).get(entry_id, [])
        lost = [o for o in objects if not (o.path and Path(o.path).is_file())]
        if objects and not lost:
            return False
        for obj in lost:
            obj.path = None  # nothing to send until the worker has written it again
            session.flush()
            mark_attempt(
                session, obj.id, utcnow(), "rebuild requested by an operator", None, REBUILDING
            )
    enqueue_publish([entry_id])
    return True


@app.command()
def deliver() -> None:
    """Send pending SR/SC objects to the PACS until stopped (the `deliver` service).

    Retries with backoff while the PACS is down, one association per batch, and prunes stored
    files from the outbox after CXR_RESULTS_RETENTION_H. Ctrl-C or SIGTERM stops it.
    """
    from worker import service
    from worker.delivery import build_deliverer

    get_settings.cache_clear()
    settings = get_settings()
    service.configure_logging(settings.log_level)
    deliverer = build_deliverer(settings)
    if deliverer is None:
        typer.echo("no PACS configured: set CXR_PACS_HOST (and port, AE title)", err=True)
        raise typer.Exit(2)
    stop = threading.Event()
    service.stop_on_signals(stop)
    typer.echo(f"cxr-triage delivering results to {deliverer.node} (Ctrl-C stops)", err=True)
    deliverer.run(stop)


@app.command()
def listen() -> None:
    """Receive radiographs by DICOM C-STORE into the inbox (a Storage SCP).

    AE title CXR_LISTEN_AE_TITLE on CXR_LISTEN_PORT; CR and DX for presentation only, C-ECHO
    answered; CXR_LISTEN_ALLOWED_AE_TITLES restricts who may call. Ctrl-C or SIGTERM stops.
    """
    from pacs.receiver import Receiver, ReceiverConfig, parse_allowed_callers
    from worker import service

    get_settings.cache_clear()
    settings = get_settings()
    service.configure_logging(settings.log_level)
    try:
        config = ReceiverConfig(
            inbox=settings.inbox_dir,
            ae_title=settings.listen_ae_title,
            port=settings.listen_port,
            host=settings.listen_host,
            allowed_callers=parse_allowed_callers(settings.listen_allowed_ae_titles),
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    stop = threading.Event()
    service.stop_on_signals(stop)
    typer.echo(
        f"cxr-triage listening as {config.ae_title} on {config.host}:{config.port}, "
        f"into {config.inbox} (Ctrl-C stops)",
        err=True,
    )
    Receiver(config).serve(stop)
