"""Prometheus metrics of the worker: what Flower shows, for the hospital's monitoring.

| metric                                   | type      | labels        |
|------------------------------------------|-----------|---------------|
| ``cxr_triage_images_processed_total``    | counter   | status        |
| ``cxr_triage_images_rejected_total``     | counter   | reason        |
| ``cxr_triage_task_duration_seconds``     | histogram |               |
| ``cxr_triage_turnaround_seconds``        | histogram |               |
| ``cxr_triage_pacs_results_total``        | counter   | outcome       |
| ``cxr_triage_model_info``                | gauge = 1 | model_version |
| ``cxr_triage_result_objects``            | gauge     | state         |
| ``cxr_triage_rows_waiting``              | gauge     | status        |
| ``cxr_triage_result_objects_by_kind``    | gauge     | kind, state   |
| ``cxr_triage_ris_messages_total``        | counter   | kind, outcome |
| ``cxr_triage_drift_*`` (:mod:`worker.drift_watch`) | gauge   | model_version |

``processed`` counts every final outcome (done, rejected, failed); ``rejected`` breaks the
rejections down by :class:`ingest.Reason` value. ``task_duration`` is one task, claim to
filed (a batch of up to ``batch_size`` images); ``turnaround`` is per image, from the file
being stable in the inbox to its result stored, the "total time" cleared products report.
``result_objects`` is read from the database at each scrape: how many SR/SC objects are
``pending``, ``stored`` and ``failed`` (alert on ``failed`` > 0, or ``pending`` growing),
all kinds together; ``_by_kind`` splits them (``sr``, ``sc``, ``hl7``, ``fhir``).
``ris_messages`` counts the RIS deliverers' outcomes (``stored``: the RIS acknowledged it).
``rows_waiting`` too: the worklist rows ``queued`` (files waiting for a worker) and
``processing``, the backlog whatever the broker, which an autoscaler can scale workers on.
Labels never carry patient data.

Prefork workers: every child counts in its own process, so set ``PROMETHEUS_MULTIPROC_DIR``
to an empty folder in the worker's environment *before it starts* (prometheus_client reads
it at import); :func:`serve` then publishes the children's sum. Solo/threads pools need no
folder.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from db.models import utcnow

log = logging.getLogger(__name__)

MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
#: Set by ``cxr-triage run`` for its worker: the folder is already reset.
RESET_BY_PARENT = "CXR_METRICS_RESET_BY_PARENT"
TASK_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
TURNAROUND_BUCKETS = (1, 2, 5, 10, 15, 20, 30, 45, 60, 120, 300, 900, 1800, 3600)


class _Valued(Protocol):
    @property
    def value(self) -> str: ...


class _Versioned(Protocol):
    @property
    def model_version(self) -> str: ...


class OutcomeLike(Protocol):
    """What every :data:`worker.outcomes.Outcome` offers."""

    @property
    def status(self) -> _Valued: ...

    @property
    def reason(self) -> str | None: ...

    @property
    def prediction(self) -> _Versioned | None: ...


class WorkerMetrics:
    """The worker's metrics in ``registry`` (the process-wide default unless given)."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        self.processed = Counter(
            "cxr_triage_images_processed",
            "Images that reached a final status",
            ["status"],
            registry=registry,
        )
        self.rejected = Counter(
            "cxr_triage_images_rejected",
            "Images rejected as bad or ineligible input, by reason",
            ["reason"],
            registry=registry,
        )
        self.task_duration = Histogram(
            "cxr_triage_task_duration_seconds",
            "One triage task, claim to filed (a batch of images)",
            buckets=TASK_BUCKETS,
            registry=registry,
        )
        self.turnaround = Histogram(
            "cxr_triage_turnaround_seconds",
            "Per image: stable in the inbox to result stored",
            buckets=TURNAROUND_BUCKETS,
            registry=registry,
        )
        self.pacs_results = Counter(
            "cxr_triage_pacs_results",
            "DICOM result objects (SR, SC) by outcome: written, stored, retrying, failed",
            ["outcome"],
            registry=registry,
        )
        self.ris_messages = Counter(
            "cxr_triage_ris_messages",
            "RIS messages (kind hl7 or fhir) by outcome: stored, retrying, failed",
            ["kind", "outcome"],
            registry=registry,
        )
        self.model_info = Gauge(
            "cxr_triage_model_info",
            "The model version scoring in this worker (value 1)",
            ["model_version"],
            multiprocess_mode="livemax",
            registry=registry,
        )

    def observe_batch(
        self,
        outcomes: Sequence[OutcomeLike],
        received_at: Sequence[datetime],
        seconds: float,
        now: datetime | None = None,
    ) -> None:
        """Count one task's outcomes (parallel to the rows' ``received_at``) and its time."""
        finished = now or utcnow()
        self.task_duration.observe(seconds)
        for outcome, received in zip(outcomes, received_at, strict=True):
            status = outcome.status.value
            self.processed.labels(status=status).inc()
            if status == "rejected":
                self.rejected.labels(reason=outcome.reason or "unknown").inc()
            if status == "done":
                self.turnaround.observe(max((finished - received).total_seconds(), 0.0))
            if outcome.prediction is not None:
                self.set_model_version(outcome.prediction.model_version)

    def set_model_version(self, version: str) -> None:
        self.model_info.labels(model_version=version).set(1)

    def observe_pacs(self, outcome: str, count: int = 1) -> None:
        """``written`` (outbox), ``stored`` (C-STORE accepted), ``retrying`` (to be sent
        again) or ``failed`` (for good: an operator looks), in result objects."""
        if count:
            self.pacs_results.labels(outcome=outcome).inc(count)

    def observe_ris(self, kind: str, outcome: str, count: int = 1) -> None:
        """A RIS deliverer's outcomes (``stored``, ``retrying``, ``failed``) of ``kind``."""
        if count:
            self.ris_messages.labels(kind=kind, outcome=outcome).inc(count)


class ResultStates(Collector):
    """``cxr_triage_result_objects{state}``, counted in the database when scraped: the one
    number that is right whichever process (worker, ``deliver``, ``run``) moved the objects."""

    def __init__(
        self,
        counts: Callable[[], Mapping[str, int]],
        by_kind: Callable[[], Mapping[tuple[str, str], int]] | None = None,
    ) -> None:
        self._counts = counts
        self._by_kind = by_kind

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            counts = self._counts()
            by_kind = self._by_kind() if self._by_kind is not None else None
        except SQLAlchemyError as error:  # a scrape must not fail while the database is down
            log.warning("result object counts unavailable: %s", type(error).__name__)
            return
        family = GaugeMetricFamily(
            "cxr_triage_result_objects",
            "Result objects (SR, SC, RIS messages) by state: pending, stored, failed",
            labels=["state"],
        )
        for state, count in counts.items():
            family.add_metric([state], count)
        yield family
        if by_kind is None:
            return
        kinds = GaugeMetricFamily(
            "cxr_triage_result_objects_by_kind",
            "Result objects by kind (sr, sc, hl7, fhir) and state",
            labels=["kind", "state"],
        )
        for (kind, state), count in by_kind.items():
            kinds.add_metric([kind, state], count)
        yield kinds


class RowsWaiting(Collector):
    """``cxr_triage_rows_waiting{status}``: worklist rows ``queued`` and ``processing``,
    counted in the database when scraped. Every worker reports the same backlog: an
    autoscaler reads one of them (``max``), as the HPA of ``deploy/k8s`` does."""

    def __init__(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            counts = self._counts()
        except SQLAlchemyError as error:  # a scrape must not fail while the database is down
            log.warning("waiting row counts unavailable: %s", type(error).__name__)
            return
        family = GaugeMetricFamily(
            "cxr_triage_rows_waiting",
            "Worklist rows waiting: queued (for a worker) and processing",
            labels=["status"],
        )
        for status, count in counts.items():
            family.add_metric([status], count)
        yield family


def waiting_row_counts(sessions: sessionmaker[Session]) -> dict[str, int]:
    """Rows ``queued`` and ``processing`` in the database of ``sessions`` (one query)."""
    from sqlalchemy import func, select

    from db.models import WAITING_STATUSES, Status, WorklistEntry

    counts = {status.value: 0 for status in (Status.QUEUED, Status.PROCESSING)}
    with sessions() as session:
        rows = session.execute(
            select(WorklistEntry.status, func.count())
            .where(WorklistEntry.status.in_(list(WAITING_STATUSES)))
            .group_by(WorklistEntry.status)
        ).all()
    for status, count in rows:
        counts[Status(status).value] = int(count)
    return counts


def result_state_counts(sessions: sessionmaker[Session]) -> dict[str, int]:
    """The result objects by state in the database of ``sessions``."""
    from db.results import state_counts

    with sessions() as session:
        return {state.value: count for state, count in state_counts(session).items()}


def result_kind_state_counts(sessions: sessionmaker[Session]) -> dict[tuple[str, str], int]:
    """The result objects by kind and state in the database of ``sessions``."""
    from db.results import kind_state_counts

    with sessions() as session:
        return {
            (kind.value, state.value): count
            for (kind, state), count in kind_state_counts(session).items()
        }


@lru_cache(maxsize=1)
def get_metrics() -> WorkerMetrics:
    """This process's metrics, created on first use (registering twice would fail)."""
    return WorkerMetrics()


def multiprocess_dir() -> Path | None:
    value = os.environ.get(MULTIPROCESS_VARIABLE)
    return Path(value) if value else None


def reset_multiprocess_dir() -> None:
    """Before any process counts: drop a previous run's metric files.

    Only prometheus_client's own ``*.db`` files go; the folder may be one an operator
    pointed ``PROMETHEUS_MULTIPROC_DIR`` at, with other things in it. A worker that
    ``cxr-triage run`` started skips this (:data:`RESET_BY_PARENT`): ``run`` reset the
    folder before its own delivery counters began writing there, and a second reset would
    unlink the files they still write to.
    """
    folder = multiprocess_dir()
    if folder is None or os.environ.get(RESET_BY_PARENT) == "1":
        return
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink(missing_ok=True)


def mark_process_dead(pid: int) -> None:
    """In ``worker_process_shutdown``: a recycled child's live gauges stop counting."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(pid)


def serve(
    port: int,
    address: str = "127.0.0.1",
    result_counts: Callable[[], Mapping[str, int]] | None = None,
    collectors: Sequence[Collector] = (),
    result_kind_counts: Callable[[], Mapping[tuple[str, str], int]] | None = None,
) -> None:
    """Serve ``/metrics`` on ``port`` from this process: the children's sum in multiprocess
    mode, this process's own metrics otherwise; plus the result objects by state and
    ``collectors`` (the drift watch). Loopback unless ``address`` opens it: the endpoint has
    no login, and its counts and model version are nobody else's business."""
    registry: CollectorRegistry = REGISTRY
    if multiprocess_dir() is not None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    if result_counts is not None:
        registry.register(ResultStates(result_counts, result_kind_counts))
    for collector in collectors:
        registry.register(collector)
    start_http_server(port, addr=address, registry=registry)
    log.info("metrics on %s:%d/metrics", address, port)
