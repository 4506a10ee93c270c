"""``train``, ``evaluate`` and ``predict``: the model's commands."""

from __future__ import annotations

from worker.cli.app import app  # noqa: F401
