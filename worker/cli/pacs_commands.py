"""``pacs-send``: C-STORE the SR/SC files in the outbox (again) to the configured PACS."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from worker.cli.app import app
from worker.settings import get_settings


@app.command("pacs-send")
def pacs_send(
    files: Annotated[
        list[Path] | None, typer.Argument(help="DICOM files (default: every .dcm in the outbox)")
    ] = None,
) -> None:
    """Send results to CXR_PACS_HOST:CXR_PACS_PORT (AE CXR_PACS_AE_TITLE).

    Safe to repeat: the results' UIDs are fixed, so the PACS replaces what it already has.
    """
    from pacs.store import StoreError, send
    from worker.results import pacs_node

    get_settings.cache_clear()
    settings = get_settings()
    node = pacs_node(settings)
    if node is None:
        typer.echo("no PACS configured: set CXR_PACS_HOST (and port, AE title)", err=True)
        raise typer.Exit(2)
    paths = files or sorted(settings.outbox_dir.glob("*.dcm"))
    if not paths:
        typer.echo(f"nothing to send in {settings.outbox_dir}", err=True)
        return
    try:
        stored = send(paths, node)
    except StoreError as error:
        typer.echo(f"cxr-triage pacs-send: {error}", err=True)
        raise typer.Exit(1) from error
    typer.echo(f"stored {len(stored)} object(s) on {node}")
