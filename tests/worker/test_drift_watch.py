"""The worker's drift watch: warnings logged (rate-limited, never raising) and the
``cxr_triage_drift_*`` gauges served from the database."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

from db.drift_counts import add_counts
from db.engine import make_session_factory
from db.models import utcnow
from model.drift import Reference, score_bin
from worker.drift_watch import DriftCollector, DriftWatch


def _reference() -> Reference:
    rng = np.random.default_rng(0)
    return Reference("m-1", "validation", rng.uniform(size=500), rng.gamma(9.0, size=500), 0.5, 0.2)


def _all_urgent(sessions: sessionmaker[Session], cases: int) -> None:
    with sessions.begin() as session:
        add_counts(
            session,
            utcnow().date(),
            "m-1",
            {("score", score_bin(0.99)): cases, ("priority", 0): cases, ("content", 0): cases},
        )


def test_the_watch_logs_a_warning_once_per_interval(
    sessions: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    _all_urgent(sessions, 120)
    watch = DriftWatch(sessions, _reference(), interval_s=3600)
    with caplog.at_level(logging.WARNING, logger="worker.drift_watch"):
        first = watch.check()
        second = watch.check()  # within the interval: not even a query
    assert first is not None and first.warnings and second is None
    messages = [r.getMessage() for r in caplog.records]
    assert sum("URGENT share 100% over 120 cases" in m for m in messages) == 1


def test_the_watch_never_raises_when_the_database_is_gone(
    tmp_path: object, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")  # nothing listens
    watch = DriftWatch(make_session_factory(engine), _reference(), interval_s=0)
    with caplog.at_level(logging.WARNING, logger="worker.drift_watch"):
        assert watch.check() is None
    assert "database unavailable" in caplog.text


def test_a_watch_without_reference_compares_nothing(sessions: sessionmaker[Session]) -> None:
    assert DriftWatch(sessions, None, interval_s=0).check() is None


def test_the_gauges_carry_the_window_and_the_warning(sessions: sessionmaker[Session]) -> None:
    _all_urgent(sessions, 120)
    registry = CollectorRegistry()
    registry.register(DriftCollector(sessions, _reference()))
    text = generate_latest(registry).decode()
    assert 'cxr_triage_drift_cases{model_version="m-1"} 120.0' in text
    assert 'cxr_triage_drift_urgent_share{model_version="m-1"} 1.0' in text
    assert 'cxr_triage_drift_warning{model_version="m-1"} 1.0' in text
    assert "cxr_triage_drift_urgent_expected_high" in text


def test_the_gauges_survive_a_database_outage() -> None:
    engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    registry = CollectorRegistry()
    registry.register(DriftCollector(make_session_factory(engine), _reference()))
    assert "cxr_triage_drift" not in generate_latest(registry).decode()
