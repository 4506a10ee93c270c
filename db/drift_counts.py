"""The drift watch's counts (the ``drift_count`` table) and its window: add a batch's
histogram bins, read the last :data:`WINDOW_DAYS` days as one set of counts.

The window is defined here, once, because both readers of it (the worker's drift watch,
:mod:`worker.drift_watch`, and the review page's header, :mod:`web.drift_header`) may
import ``db`` but not each other. The statistics over a window are :mod:`model.drift`'s.

Session first, never commits (the pipeline stores the counts in the same transaction as
the rows they count, so a retried task cannot count twice).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db.models import DriftCount, utcnow

#: ``(measure, bin) -> count``
Bins = Mapping[tuple[str, int], int]

#: The drift watch's window: the last 7 UTC days, today included.
WINDOW_DAYS = 7


@dataclass(frozen=True)
class CountWindow:
    """One model's counts over ``days`` UTC days from ``first_day`` on, pooled."""

    first_day: date
    days: int
    bins: Counter[tuple[str, int]]


def add_counts(session: Session, day: date, model_version: str, bins: Bins) -> None:
    """Add ``bins`` to the day's counts: one ``INSERT ... ON CONFLICT DO UPDATE``, the bins
    its parameters (one statement compiled once and cached, whatever the number of bins)."""
    rows = [
        {"day": day, "model_version": model_version, "measure": m, "bin": b, "count": n}
        for (m, b), n in sorted(bins.items())
        if n
    ]
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(DriftCount)
    upsert = statement.on_conflict_do_update(
        index_elements=["day", "model_version", "measure", "bin"],
        set_={"count": DriftCount.count + statement.excluded.count},
    )
    session.connection().execute(upsert, rows)  # sorted rows: concurrent batches lock in order


def counts_since(
    session: Session, first_day: date, model_version: str | None = None
) -> dict[tuple[date, str], dict[tuple[str, int], int]]:
    """``(day, model_version) -> {(measure, bin): count}`` from ``first_day`` on."""
    query = select(DriftCount).where(DriftCount.day >= first_day)
    if model_version is not None:
        query = query.where(DriftCount.model_version == model_version)
    result: dict[tuple[date, str], dict[tuple[str, int], int]] = {}
    for row in session.scalars(query):
        result.setdefault((row.day, row.model_version), {})[(row.measure, row.bin)] = row.count
    return result


def window_counts(session: Session, model_version: str, days: int = WINDOW_DAYS) -> CountWindow:
    """The last ``days`` UTC days (today included) of ``model_version``'s counts, as one."""
    first_day = utcnow().date() - timedelta(days=days - 1)
    bins: Counter[tuple[str, int]] = Counter()
    for day_bins in counts_since(session, first_day, model_version).values():
        bins.update(day_bins)
    return CountWindow(first_day, days, bins)
