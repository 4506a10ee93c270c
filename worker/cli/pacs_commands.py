"""``pacs-send`` and ``deliver``: the results' way to the PACS, for operators and services."""

from __future__ import annotations

import threading
from pathlib import Path
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
    from db.models import DICOM_KINDS, utcnow
    from db.results import requeue
    from worker.deliverers import build_deliverer
    from worker.resources import get_session_factory

    get_settings.cache_clear()
    deliverer = build_deliverer(get_settings())
    if deliverer is None:
        typer.echo("no PACS configured: set CXR_PACS_HOST (and port, AE title)", err=True)
        raise typer.Exit(2)
    if row is not None and _rebuild(row):
        typer.echo(f"row {row}: results without a file are rebuilt by the worker, then sent")
    with get_session_factory().begin() as session:
        count = requeue(
            session, utcnow(), entry_id=row, include_stored=row is not None, kinds=DICOM_KINDS
        )
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
    """Objects of the row with no file in the outbox (pruned, lost, never written) or an
    unreadable one (empty, truncated: rewritten under the same name): mark them
    ``failed`` (``rebuilding``) and send the results task, which writes them again from the
    archived original; they become ``pending`` then. True when a rebuild was requested."""
    from pathlib import Path

    from db.models import DICOM_KINDS, ResultState, utcnow
    from db.results import mark_attempt, objects_of
    from pacs.delivery import UNREADABLE
    from worker.resources import get_session_factory
    from worker.tasks import enqueue_publish

    with get_session_factory().begin() as session:
        objects = [
            o for o in objects_of(session, [entry_id]).get(entry_id, []) if o.kind in DICOM_KINDS
        ]
        lost = [
            o
            for o in objects
            if not (o.path and Path(o.path).is_file())
            or (o.state is ResultState.FAILED and o.reason == UNREADABLE)  # empty, truncated
        ]
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


#: How often ``deliver`` without a PACS reads its settings again (a settings file can change).
CONFIGURATION_POLL_S = 5.0


@app.command("pacs-echo")
def pacs_echo() -> None:
    """C-ECHO the configured PACS, and check it takes the SR and the SC.

    One association, as the deliverer makes it (CXR_PACS_HOST, CXR_PACS_PORT, both AE
    titles, CXR_PACS_TIMEOUT_S), proposing Verification and the two storage SOP Classes.
    Exit 0: echoed, and both SOP Classes accepted; 1: the PACS unreachable, the association
    rejected (the reason in words) or a SOP Class refused; 2: no PACS configured.
    """
    from pydicom.uid import (
        UID,
        ComprehensiveSRStorage,
        ExplicitVRLittleEndian,
        JPEGBaseline8Bit,
        SecondaryCaptureImageStorage,
    )

    from pacs.store import StoreError, echo
    from worker.destinations import pacs_node

    get_settings.cache_clear()
    node = pacs_node(get_settings())
    if node is None:
        typer.echo("no PACS configured: set CXR_PACS_HOST (and port, AE title)", err=True)
        raise typer.Exit(2)
    try:
        sent_as = [  # as pacs.outbox writes them
            (ComprehensiveSRStorage, ExplicitVRLittleEndian),
            (SecondaryCaptureImageStorage, JPEGBaseline8Bit),
        ]
        report = echo(node, sent_as)
    except StoreError as error:
        typer.echo(f"cxr-triage pacs-echo: {error}", err=True)
        if error.permanent:
            typer.echo(
                f"the PACS must know this system as AE title {node.calling_ae_title} "
                f"(CXR_PACS_CALLING_AE_TITLE), and call itself {node.called_ae_title} "
                "(CXR_PACS_AE_TITLE)",
                err=True,
            )
        raise typer.Exit(1) from None
    if report.status == 0x0000:
        typer.echo(
            f"C-ECHO {node.calling_ae_title} -> {node}: success (0x0000) in {report.seconds:.2f} s"
        )
    else:
        status = "no response" if report.status is None else f"status 0x{report.status:04X}"
        typer.echo(f"C-ECHO {node.calling_ae_title} -> {node}: {status}", err=True)
    for sop_class, syntaxes in report.accepted.items():
        name = UID(sop_class).name
        if syntaxes:
            typer.echo(f"{name}: accepted ({', '.join(syntaxes)})")
        else:
            typer.echo(f"{name}: REFUSED: these results would fail (refused_by_pacs)", err=True)
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def deliver() -> None:
    """Send pending SR/SC objects to the PACS, and RIS messages to the RIS, until stopped
    (the `deliver` service).

    Retries temporary failures with backoff for CXR_RESULTS_GIVE_UP_AFTER_H, fails permanent
    refusals at once, one association per batch, and prunes stored files from the outbox
    after CXR_RESULTS_RETENTION_H. With CXR_CATCHUP_HOURS, also fetches the CR/DX studies the
    PACS holds that never reached the worklist. Without CXR_PACS_HOST nor a RIS it says so
    once and waits, reading its settings again every few seconds, until one is configured.
    Ctrl-C or SIGTERM stops it.
    """
    from worker import service
    from worker.deliverers import build_catchup, build_deliverer, build_ris_deliverers

    get_settings.cache_clear()
    settings = get_settings()
    service.configure_logging(settings.log_level)
    stop = threading.Event()
    service.stop_on_signals(stop)
    beat = service.deliver_heartbeat(settings)
    try:
        deliverer, ris_loops = build_deliverer(settings), build_ris_deliverers(settings)
        if deliverer is None and not ris_loops:
            typer.echo(
                "no PACS configured (CXR_PACS_HOST is empty), nor a RIS (CXR_RIS_HOST, "
                "CXR_FHIR_BASE_URL): results stay in the outbox; waiting until one is "
                "configured (Ctrl-C stops)",
                err=True,
            )
            while deliverer is None and not ris_loops and not stop.wait(CONFIGURATION_POLL_S):
                beat()
                get_settings.cache_clear()
                settings = get_settings()
                deliverer, ris_loops = build_deliverer(settings), build_ris_deliverers(settings)
            if deliverer is None and not ris_loops:
                return  # stopped while waiting
        for loop in ris_loops:
            typer.echo(f"cxr-triage delivering RIS messages to {loop.node}", err=True)
        if deliverer is not None:
            catchup = build_catchup(settings)
            if catchup is not None:
                threading.Thread(
                    target=catchup.run, args=(stop,), name="catch-up", daemon=True
                ).start()
                typer.echo(
                    f"catch-up: every {catchup.interval_s:g} s, CR/DX studies of the last "
                    f"{settings.catchup_hours:g} h not on the worklist are moved to "
                    f"{catchup.destination}",
                    err=True,
                )
            typer.echo(
                f"cxr-triage delivering results to {deliverer.node} (Ctrl-C stops)", err=True
            )
        # One loop in the foreground beats for the health check; the others in threads.
        foreground, *others = [*([deliverer] if deliverer is not None else []), *ris_loops]
        for loop in others:
            name = f"results-{loop.kinds[0].value}"
            threading.Thread(target=loop.run, args=(stop,), name=name, daemon=True).start()
        foreground.run(stop, beat)
    finally:
        beat.stop()


@app.command()
def listen(
    inbox: Annotated[
        Path | None,
        typer.Argument(
            help=(
                "Folder to receive into (default: CXR_INBOX, else the inbox `run`/`watch` "
                "last watched with this data folder, else <data_dir>/inbox)"
            ),
            file_okay=False,
            metavar="INBOX",
        ),
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default CXR_LISTEN_PORT)")] = None,
    ae_title: Annotated[
        str | None, typer.Option(help="Our AE title (default CXR_LISTEN_AE_TITLE)")
    ] = None,
) -> None:
    """Receive radiographs by DICOM C-STORE into the inbox (a Storage SCP).

    CR and DX for presentation only, C-ECHO answered. Only known peers may send:
    CXR_LISTEN_PEERS (AE_TITLE@host, ...); unset, only this machine. Objects are streamed
    to disk and checked as ingest will check them before Success. Ctrl-C or SIGTERM stops.
    """
    from worker import service
    from worker.cli.service_commands import _settings

    settings = _settings(inbox)
    service.configure_logging(settings.log_level)
    target = service.receiving_inbox(settings)
    try:
        receiver = service.build_receiver(settings, target, port=port, ae_title=ae_title)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    stop = threading.Event()
    service.stop_on_signals(stop)
    config = receiver.config
    typer.echo(
        f"cxr-triage listening as {config.ae_title} on {config.host}:{config.port}, "
        f"into {target} (Ctrl-C stops)",
        err=True,
    )
    receiver.serve(stop)
