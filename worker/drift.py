"""The drift watch in the worker: count every stored prediction, warn when the stream drifts.

The statistics are in :mod:`model.drift`; the counts in the ``drift_count`` table
(:mod:`db.drift`). The pipeline adds each batch's counts in the transaction that stores its
rows (a retried task cannot count twice), then :class:`DriftWatch` logs the 7-day window's
warnings, at most every five minutes; :class:`DriftCollector` serves the same report on
``/metrics``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import Protocol

from prometheus_client.core import GaugeMetricFamily
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from db.drift import add_counts, counts_since
from db.models import Status, utcnow
from model.drift import DriftReport, Reference, batch_bins, pooled, report
from model.prediction import Prediction

log = logging.getLogger(__name__)

WINDOW_DAYS = 7


def window_report(session: Session, reference: Reference, days: int = WINDOW_DAYS) -> DriftReport:
    """The last ``days`` UTC days (today included) of ``reference``'s model."""
    first_day = utcnow().date() - timedelta(days=days - 1)
    counts = counts_since(session, first_day, reference.model_version).values()
    return report(pooled(counts), reference, first_day, days)


class DriftWatch:
    """Logs the window's warnings from the worker, at most once per ``interval_s``.

    Never raises: it runs after a task's rows are stored, and a database hiccup here must
    not make Celery retry work that is done.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        reference: Reference | None,
        interval_s: float = 300.0,
    ) -> None:
        self.sessions = sessions
        self.reference = reference
        self.interval_s = interval_s
        self._last = -float("inf")

    def check(self) -> DriftReport | None:
        """The report, when ``interval_s`` has passed since the last; warnings logged."""
        now = time.monotonic()
        if self.reference is None or now - self._last < self.interval_s:
            return None
        self._last = now
        try:
            with self.sessions() as session:
                result = window_report(session, self.reference)
        except SQLAlchemyError as error:
            log.warning("drift watch: database unavailable (%s)", type(error).__name__)
            return None
        for warning in result.warnings:
            log.warning("drift watch (%s): %s", result.model_version, warning)
        return result


class _OutcomeLike(Protocol):
    @property
    def status(self) -> Status: ...

    @property
    def prediction(self) -> Prediction | None: ...


def record(session: Session, outcomes: Iterable[_OutcomeLike]) -> None:
    """Add stored outcomes to today's counts, in the caller's transaction."""
    pairs = [(o.prediction, o.status is Status.DONE) for o in outcomes if o.prediction]
    for version, bins in batch_bins(pairs).items():
        add_counts(session, utcnow().date(), version, bins)


class DriftCollector:
    """Prometheus collector: the 7-day drift report, computed from the database per scrape.

    ``cxr_triage_drift_*`` gauges, labelled by model version only (no patient data). The
    query reads a few hundred aggregated rows; a database outage yields no drift samples
    rather than a failed scrape.
    """

    def __init__(self, sessions: sessionmaker[Session], reference: Reference) -> None:
        self.sessions = sessions
        self.reference = reference

    def describe(self) -> list[GaugeMetricFamily]:
        """Nothing up front: registering must not query the database."""
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            with self.sessions() as session:
                result = window_report(session, self.reference)
        except SQLAlchemyError:
            log.warning("drift metrics: database unavailable")
            return
        values = {
            "cases": ("Scored images in the 7-day window", result.cases),
            "urgent_share": ("Share of URGENT among scored images", result.urgent_share),
            "urgent_expected_low": (
                "Lower end of the URGENT share's 99 % binomial band",
                result.urgent_band[0] if result.urgent_band else None,
            ),
            "urgent_expected_high": (
                "Upper end of the URGENT share's 99 % binomial band",
                result.urgent_band[1] if result.urgent_band else None,
            ),
            "suspect_share": ("Share of SUSPECT among scored images", result.suspect_share),
            "score_psi": ("PSI of calibrated probabilities vs the reference", result.score_psi),
            "score_ks": ("KS statistic of probabilities vs the reference", result.score_ks),
            "distance_psi": ("PSI of content-check distances", result.distance_psi),
            "distance_ks": ("KS statistic of content-check distances", result.distance_ks),
            "not_chest": ("Images rejected not_chest_radiograph", result.not_chest),
            "warning": ("1 while the drift watch warns", float(bool(result.warnings))),
        }
        for name, (text, value) in values.items():
            if value is None:
                continue
            family = GaugeMetricFamily(
                f"cxr_triage_drift_{name}", text + " (7 days)", labels=["model_version"]
            )
            family.add_metric([result.model_version], float(value))
            yield family
