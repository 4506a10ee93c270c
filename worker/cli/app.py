"""The ``cxr-triage`` Typer application; command modules register themselves on it."""

from __future__ import annotations

import os
from typing import Any

import typer
from typer.core import TyperGroup

#: The file creation mask when the settings cannot be read (the command then says why).
DEFAULT_UMASK = 0o077


class WholeHelpGroup(TyperGroup):
    """Click's plain help, with each command's whole first sentence (wrapped) in the command
    list: Rich's option table cut option names at 80 columns (``--validation-fr…``), and
    click's own list cuts each summary at the terminal's edge."""

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=1000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def typer_app(**options: Any) -> typer.Typer:
    """A Typer app (or sub-app) with this CLI's help conventions."""
    return typer.Typer(cls=WholeHelpGroup, rich_markup_mode=None, **options)


app = typer_app(
    name="cxr-triage",
    help=(
        "Pediatric chest X-ray pneumonia triage: watch a folder, score every frontal chest "
        "radiograph, and keep a prioritized SQL worklist. Research/triage aid, not for "
        "diagnostic use."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals can hold patient data
)


@app.callback()
def main() -> None:
    """Pediatric chest X-ray pneumonia triage (research/triage aid, not for diagnostic use)."""
    apply_umask()


def apply_umask() -> None:
    """Set the process's file creation mask from ``CXR_UMASK`` (default 0077) before any
    command creates a file: the SQLite worklist, archive, quarantine, sidecars, outbox and
    overlays hold patient data and were created 0644 (issue 20). Child processes (the
    Celery worker and its pool) inherit it."""
    from worker.settings import get_settings

    get_settings.cache_clear()
    try:
        mask = get_settings().umask
    except ValueError:  # the command itself reports the bad setting
        mask = DEFAULT_UMASK
    finally:
        get_settings.cache_clear()
    os.umask(mask)
