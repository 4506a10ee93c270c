"""The drift watch's line in the review page header (the same report as ``cxr-triage status``).

A reader who sees the URGENT share outside its expected band knows the ordering may not mean
what it meant at validation, before the next case is opened.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

from sqlalchemy.orm import Session

from db.drift import counts_since
from db.models import utcnow
from model.drift import DriftReport, Reference, pooled, report

log = logging.getLogger(__name__)

WINDOW_DAYS = 7


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
    first_day = utcnow().date() - timedelta(days=WINDOW_DAYS - 1)
    counts = counts_since(session, first_day, reference.model_version).values()
    return report(pooled(counts), reference, first_day, WINDOW_DAYS)
