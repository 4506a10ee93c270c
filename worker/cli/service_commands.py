"""``run``, ``watch``, ``worker``, ``flower``, ``worklist``, ``review``, ``db``, ``status``."""

from __future__ import annotations

from worker.cli.app import app  # noqa: F401
