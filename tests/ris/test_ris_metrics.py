"""The RIS messages in the metrics: the result objects by kind and state, read from the
database at each scrape, beside the totals the PACS alerts already use."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from tests.ris.support import ROUTINE, URGENT, add_exams, listener
from tests.ris.test_mllp_delivery import loop_for
from tests.support import free_port
from worker.prometheus import (
    ResultStates,
    WorkerMetrics,
    result_kind_state_counts,
    result_state_counts,
)


def test_result_objects_by_kind_and_the_ris_outcomes(sessions, tmp_path: Path) -> None:
    add_exams(sessions, tmp_path, [URGENT, ROUTINE])
    counters = CollectorRegistry()
    metrics = WorkerMetrics(counters)
    with listener(free_port(), tmp_path / "ris.jsonl", answers="AA,AE") as ris:
        loop = loop_for(sessions, ris.port)
        loop.observe = lambda outcome, count: metrics.observe_ris("hl7", outcome, count)
        loop.deliver_once()
    registry = CollectorRegistry()
    registry.register(
        ResultStates(
            lambda: result_state_counts(sessions), lambda: result_kind_state_counts(sessions)
        )
    )
    lines = set(generate_latest(registry).decode().splitlines())
    assert 'cxr_triage_result_objects{state="stored"} 1.0' in lines
    assert 'cxr_triage_result_objects{state="failed"} 1.0' in lines
    assert 'cxr_triage_result_objects_by_kind{kind="hl7",state="stored"} 1.0' in lines
    assert 'cxr_triage_result_objects_by_kind{kind="hl7",state="failed"} 1.0' in lines
    assert 'cxr_triage_result_objects_by_kind{kind="sr",state="pending"} 0.0' in lines
    counted = generate_latest(counters).decode()
    assert 'cxr_triage_ris_messages_total{kind="hl7",outcome="stored"} 1.0' in counted
    assert 'cxr_triage_ris_messages_total{kind="hl7",outcome="failed"} 1.0' in counted
