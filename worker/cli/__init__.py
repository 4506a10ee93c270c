"""Command line interface. ``worker.cli:app`` is the ``cxr-triage`` console script.

Commands live in modules grouped by concern; importing them registers them on ``app``.
TensorFlow is imported inside the model commands only, so ``cxr-triage worklist`` and
``cxr-triage status`` start fast.
"""

from worker.cli import (  # noqa: F401  (registers commands)
    model_commands,
    pacs_commands,
    ris_commands,
    role_commands,
    service_commands,
    user_commands,
    web_commands,
    worklist_commands,
)
from worker.cli.app import app

__all__ = ["app"]
