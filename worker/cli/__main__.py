"""``python -m worker.cli`` is the ``cxr-triage`` command."""

from worker.cli import app

app()
