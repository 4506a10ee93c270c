"""The drift watch in the worker: count every stored prediction, warn when the stream drifts.

The statistics are in :mod:`model.drift`; the counts and their 7-day window in the
``drift_count`` table (:mod:`db.drift_counts`). A worker process adds each batch's counts
once its rows are committed (a retried task cannot count twice) to its :class:`DriftBuffer`,
which writes them every few seconds; then :class:`DriftWatch` logs the window's warnings, at
most every five minutes; :class:`DriftCollector` serves the same report on ``/metrics``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import date
from typing import Protocol

from prometheus_client.core import GaugeMetricFamily
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from db.drift_counts import WINDOW_DAYS, add_counts, window_counts
from db.models import Status, utcnow
from model.drift import DriftReport, Reference, batch_bins, report
from model.prediction import Prediction

log = logging.getLogger(__name__)


def window_report(session: Session, reference: Reference, days: int = WINDOW_DAYS) -> DriftReport:
    """The last ``days`` UTC days (today included) of ``reference``'s model."""
    window = window_counts(session, reference.model_version, days)
    return report(window.bins, reference, window.first_day, window.days)


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


class DriftBuffer:
    """A worker process's drift counts, written to ``drift_count`` every ``flush_s``.

    Why not in each task's transaction: every task of every worker node adds to the same
    few rows (today's bins of one model), and a row lock taken in a task's transaction is
    held until its commit, so the workers queue on those rows. Measured with
    ``bench/bench_capacity.py``: the same 225 upserts took 3 ms in all with one worker
    process and 1,338 ms with 32, and the claims slowed with them. Buffered, each process
    writes at most once per ``flush_s``, in a transaction of its own, whatever the
    throughput.

    The trade: counts reach the table up to ``flush_s`` late (the window is 7 days), and a
    process killed outright (SIGKILL, out of memory) loses its last ``flush_s`` of counts:
    the drift watch undercounts slightly, never twice (counts are added only for rows this
    task committed). A clean stop flushes (:meth:`close`). A database outage keeps the
    counts for the next flush.
    """

    def __init__(self, sessions: sessionmaker[Session], flush_s: float = 5.0) -> None:
        self.sessions = sessions
        self.flush_s = flush_s
        self._pending: dict[tuple[date, str], Counter[tuple[str, int]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, outcomes: Iterable[_OutcomeLike]) -> None:
        """Count stored outcomes (after their rows were committed)."""
        pairs = [(o.prediction, o.status is Status.DONE) for o in outcomes if o.prediction]
        if not pairs:
            return
        today = utcnow().date()
        with self._lock:
            for version, bins in batch_bins(pairs).items():
                self._pending.setdefault((today, version), Counter()).update(bins)
            if self._thread is None:  # started in the process that counts (after a fork)
                self._thread = threading.Thread(target=self._run, name="drift", daemon=True)
                self._thread.start()

    def flush(self) -> int:
        """Write what was counted; returns the (day, model) sets written."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return 0
        try:
            with self.sessions.begin() as session:
                for (day, version), bins in sorted(pending.items()):
                    add_counts(session, day, version, bins)
        except SQLAlchemyError as error:  # kept for the next flush
            log.warning("drift counts not written yet: %s", type(error).__name__)
            with self._lock:
                for key, bins in pending.items():
                    self._pending.setdefault(key, Counter()).update(bins)
            return 0
        return len(pending)

    def close(self) -> None:
        """Stop the flushing thread and write what is left (a clean stop)."""
        self._stop.set()
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            try:
                self.flush()
            except Exception:  # the thread must outlive anything; counts wait
                log.exception("drift counts flush failed")


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
            "cases": (f"Scored images in the {WINDOW_DAYS}-day window", result.cases),
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
                f"cxr_triage_drift_{name}", f"{text} ({WINDOW_DAYS} days)", labels=["model_version"]
            )
            family.add_metric([result.model_version], float(value))
            yield family
