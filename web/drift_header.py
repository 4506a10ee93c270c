"""The drift watch's line in the review page header (the same report as ``cxr-triage status``).

A reader who sees the URGENT share outside its expected band knows the ordering may not mean
what it meant at validation, before the next case is opened.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.orm import Session

from db.drift_counts import window_counts
from model.drift import DriftReport, Reference, report

log = logging.getLogger(__name__)


def load_reference(model_dir: Path | None) -> Reference | None:
    """The model's reference, or None (and a warning) when it cannot be read."""
    try:
        return Reference.load(model_dir)
    except (OSError, ValueError, KeyError) as error:
        log.warning("no drift reference for the review page: %s", error)
        return None


def header_report(session: Session, reference: Reference | None) -> DriftReport | None:
    if reference is None:
        return None
    window = window_counts(session, reference.model_version)  # the worker's window too
    return report(window.bins, reference, window.first_day, window.days)
