"""``ris-send`` and ``ris-echo``: the RIS messages' way out, for operators (the loops run in
``deliver`` and ``run``)."""

from __future__ import annotations

from typing import Annotated

import typer

from worker.cli.app import app
from worker.settings import get_settings

NO_RIS = "no RIS configured: set CXR_RIS_HOST (MLLP) and/or CXR_FHIR_BASE_URL (FHIR)"


@app.command("ris-send")
def ris_send(
    row: Annotated[
        int | None,
        typer.Option(help="Re-send this worklist row's RIS messages, even if acknowledged"),
    ] = None,
) -> None:
    """Re-send RIS messages now: every `failed` one (default), or one row's.

    Messages the RIS acknowledged are never sent again unless a row is named; they go under
    their first MSH-10 (a RIS that keeps control ids sees a duplicate). The delivery loops
    (`deliver`, or `run`) retry pending messages by themselves; this is for what they gave up
    on, once the cause is fixed. Exit 0: all sent; 1: some failed or wait for a retry.
    """
    from db.models import utcnow
    from db.results import requeue
    from worker.deliverers import build_ris_deliverers
    from worker.resources import get_session_factory

    get_settings.cache_clear()
    loops = build_ris_deliverers(get_settings())
    if not loops:
        typer.echo(NO_RIS, err=True)
        raise typer.Exit(2)
    problem = False
    for loop in loops:
        with get_session_factory().begin() as session:
            count = requeue(
                session, utcnow(), entry_id=row, include_stored=row is not None, kinds=loop.kinds
            )
        typer.echo(f"{count} message(s) to send to {loop.node}", err=True)
        stored = failed = retrying = 0
        while True:
            report = loop.deliver_once()
            stored, failed = stored + report.stored, failed + report.failed
            retrying += report.retrying
            if report.error or report.attempted == 0 or report.retrying:
                break
        if report.error:
            typer.echo(f"cxr-triage ris-send: {report.error}", err=True)
        typer.echo(f"sent {stored} message(s) to {loop.node}; {failed} failed")
        problem = problem or bool(failed or retrying or report.error)
    raise typer.Exit(1 if problem else 0)


@app.command("ris-echo")
def ris_echo() -> None:
    """Check the RIS destinations answer, sending no patient data: an MLLP connection opened
    and closed (no message: a RIS must not receive test results), and the FHIR server's
    `GET [base]/metadata` with the token. Exit 0: all answer; 1: one does not; 2: none set.
    """
    from pacs.store import StoreError
    from ris.mllp import probe
    from worker.destinations import fhir_node, mllp_node

    get_settings.cache_clear()
    settings = get_settings()
    mllp, fhir = mllp_node(settings), fhir_node(settings)
    if mllp is None and fhir is None:
        typer.echo(NO_RIS, err=True)
        raise typer.Exit(2)
    ok = True
    if mllp is not None:
        try:
            seconds = probe(mllp)
            typer.echo(f"{mllp}: connected in {seconds:.2f} s")
        except StoreError as error:
            typer.echo(f"cxr-triage ris-echo: {error}", err=True)
            ok = False
    if fhir is not None:
        try:
            status, version = fhir.capabilities()
        except StoreError as error:
            typer.echo(f"cxr-triage ris-echo: {error}", err=True)
            ok = False
        else:
            if status == 200:
                typer.echo(f"{fhir}: CapabilityStatement, FHIR {version or 'version not given'}")
                if version and not version.startswith("4."):
                    typer.echo(f"{fhir}: not an R4 server (FHIR {version})", err=True)
                    ok = False
            else:
                typer.echo(f"{fhir}: GET metadata answered HTTP {status}", err=True)
                ok = False
    raise typer.Exit(0 if ok else 1)
