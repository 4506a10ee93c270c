"""The ``cxr-triage`` Typer application; command modules register themselves on it."""

from __future__ import annotations

import typer

app = typer.Typer(
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
