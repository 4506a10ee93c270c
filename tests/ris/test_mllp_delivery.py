"""HL7 results over MLLP to a real listener process (built from the ``hl7`` library), through
the same delivery loop as the SR/SC: one connection per batch, urgent first; every ACK
answered by the rule of :mod:`ris.acks` (AA delivered; AE failed unless its error code says
temporary; AR retried unless it says the RIS never takes such messages); no answer, a
closed connection, garbage or an ACK for another message retried under the same MSH-10;
and a listener that is down gets every message once, urgent first, when it is back."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from db.models import ResultKind, ResultObject, ResultState
from pacs.delivery import REFUSED_BY_RIS as REFUSED
from pacs.delivery import RETRIES_EXHAUSTED, UNREADABLE, Deliverer, DeliveryPolicy
from ris.mllp import MllpNode
from tests.pacs.test_delivery import Clock
from tests.ris.support import ROUTINE, SUSPECT, URGENT, add_exams, listener
from tests.support import free_port, wait_until


def hl7_objects(sessions) -> dict[int, ResultObject]:
    with sessions() as session:
        rows = session.scalars(select(ResultObject).where(ResultObject.kind == ResultKind.HL7))
        return {o.entry_id: o for o in rows}


def loop_for(sessions, port: int, clock=None, ack_timeout_s: float = 10.0, **policy) -> Deliverer:
    node = MllpNode("127.0.0.1", port, ack_timeout_s=ack_timeout_s, connect_timeout_s=5.0)
    values: dict[str, object] = {"drain_in_order": True, "reconnect_max_s": 1.0, **policy}
    extra = {"clock": clock} if clock is not None else {}
    return Deliverer(
        sessions,
        node,
        DeliveryPolicy(**values),
        kinds=(ResultKind.HL7,),
        **extra,  # type: ignore[arg-type]
    )


def test_acknowledged_messages_are_delivered_urgent_first_over_one_connection(
    sessions, tmp_path: Path
) -> None:
    ids = add_exams(sessions, tmp_path, [ROUTINE, URGENT, SUSPECT, URGENT])
    with listener(free_port(), tmp_path / "got.jsonl") as ris:
        report = loop_for(sessions, ris.port).deliver_once()
        got = ris.messages()
    assert (report.stored, report.retrying, report.failed) == (4, 0, 0)
    assert [m["tier"] for m in got] == ["103391001", "103391001", "SUSPECT", "50811001"]
    assert len({m["connection"] for m in got}) == 1
    objects = hl7_objects(sessions)
    assert all(o.state is ResultState.STORED and o.attempts == 1 for o in objects.values())
    by_accession = {m["accession"]: m for m in got}
    for index, entry_id in enumerate(ids):
        message = by_accession[f"ACC{index:05d}"]
        assert message["control_id"] == objects[entry_id].sop_instance_uid
        assert message["patient_id"] == f"PID{index:05d}"
    # nothing is sent twice
    assert loop_for(sessions, ris.port).deliver_once().attempted == 0


@pytest.mark.parametrize(
    ("answer", "state", "reason", "words"),
    [
        ("AE", ResultState.FAILED, REFUSED, "ACK AE: application error"),
        ("AE:101", ResultState.FAILED, REFUSED, "error 101 (required field missing)"),
        ("AE:207", ResultState.PENDING, None, "application internal error"),
        ("AE:206", ResultState.PENDING, None, "record locked"),
        ("AE:204", ResultState.PENDING, None, "unknown key identifier"),
        ("AR", ResultState.PENDING, None, "rejected for now"),
        ("AR:207", ResultState.PENDING, None, "rejected for now"),
        ("AR:200", ResultState.FAILED, REFUSED, "unsupported message type"),
        ("AR:203", ResultState.FAILED, REFUSED, "unsupported version id"),
        ("CA", ResultState.STORED, None, None),
        ("ZZ", ResultState.PENDING, None, "not an acknowledgement code"),
        ("garbage", ResultState.PENDING, None, "not an HL7 ACK"),
        ("other", ResultState.PENDING, None, "acknowledges another message"),
        ("close", ResultState.PENDING, None, "closed the connection"),
    ],
)
def test_each_answer_is_delivered_retried_or_failed_by_rule(
    sessions, tmp_path: Path, answer: str, state: ResultState, reason, words
) -> None:
    [entry_id] = add_exams(sessions, tmp_path, [URGENT])
    clock = Clock()
    with listener(free_port(), tmp_path / "got.jsonl", then=answer) as ris:
        loop_for(sessions, ris.port, clock).deliver_once()
        assert len(ris.messages()) == 1
    obj = hl7_objects(sessions)[entry_id]
    assert (obj.state, obj.reason, obj.attempts) == (state, reason, 1)
    if words is not None:
        assert words in (obj.last_error or "")
    text = obj.last_error or ""
    assert "ACC00000" not in text and "Family0" not in text  # the RIS's own words: never
    if state is ResultState.PENDING:
        assert obj.next_attempt_at is not None and obj.next_attempt_at > clock.now


def test_a_temporary_error_is_retried_with_the_same_control_id_then_delivered(
    sessions, tmp_path: Path
) -> None:
    [entry_id] = add_exams(sessions, tmp_path, [URGENT])
    clock = Clock()
    with listener(free_port(), tmp_path / "got.jsonl", answers="AE:207,AR") as ris:
        loop = loop_for(sessions, ris.port, clock, backoff_start_s=2.0)
        assert loop.deliver_once().retrying == 1
        assert loop.deliver_once().attempted == 0  # backing off
        clock.advance(2)
        assert loop.deliver_once().retrying == 1
        clock.advance(4)
        assert loop.deliver_once().stored == 1
        got = ris.messages()
    assert [m["answer"] for m in got] == ["AE:207", "AR", "AA"]
    assert len({m["control_id"] for m in got}) == 1
    assert len({m["raw"] for m in got}) == 1  # the very same message, MSH-7 included
    obj = hl7_objects(sessions)[entry_id]
    assert (obj.state, obj.attempts, obj.last_error) == (ResultState.STORED, 3, None)


def test_temporary_errors_give_up_after_the_schedule(sessions, tmp_path: Path) -> None:
    [entry_id] = add_exams(sessions, tmp_path, [URGENT])
    clock = Clock()
    with listener(free_port(), tmp_path / "got.jsonl", then="AE:207") as ris:
        loop = loop_for(sessions, ris.port, clock, give_up_after=timedelta(minutes=1))
        for _ in range(20):
            loop.deliver_once()
            obj = hl7_objects(sessions)[entry_id]
            if obj.state is not ResultState.PENDING:
                break
            clock.now = max(clock.now, obj.next_attempt_at or clock.now)
    assert (obj.state, obj.reason) == (ResultState.FAILED, RETRIES_EXHAUSTED)
    assert "still not stored 0.0166667 h after the first try" in (obj.last_error or "")


def test_a_silent_ris_times_out_and_the_rest_of_the_batch_waits(sessions, tmp_path: Path) -> None:
    first, second, third = add_exams(sessions, tmp_path, [URGENT, SUSPECT, ROUTINE])
    clock = Clock()
    with listener(free_port(), tmp_path / "got.jsonl", answers="silent") as ris:
        loop = loop_for(sessions, ris.port, clock, ack_timeout_s=0.5)
        report = loop.deliver_once()
        assert (report.retrying, report.stored) == (3, 0)  # the timed-out one and 2 unsent
        objects = hl7_objects(sessions)
        assert "no ACK within 0.5 s" in (objects[first].last_error or "")
        assert objects[second].last_error == objects[third].last_error == "association ended early"
        clock.advance(3)  # the RIS is treated as down: tried again as a whole, urgent first
        report = loop.deliver_once()
        got = ris.messages()
    assert report.stored == 3
    assert [m["accession"] for m in got] == ["ACC00000", "ACC00000", "ACC00001", "ACC00002"]
    assert got[0]["control_id"] == got[1]["control_id"]  # the duplicate a RIS can discard


def test_one_unreadable_message_file_fails_alone(sessions, tmp_path: Path) -> None:
    first, _ = add_exams(sessions, tmp_path, [URGENT, ROUTINE])
    broken = Path(hl7_objects(sessions)[first].path or "")
    broken.write_bytes(broken.read_bytes()[:100])
    with listener(free_port(), tmp_path / "got.jsonl") as ris:
        report = loop_for(sessions, ris.port).deliver_once()
        assert [m["accession"] for m in ris.messages()] == ["ACC00001"]
    assert (report.stored, report.failed) == (1, 1)
    bad = hl7_objects(sessions)[first]
    assert bad.reason == UNREADABLE and "truncated" in (bad.last_error or "")


@pytest.mark.parametrize("outage_s", [4.0])
def test_a_ris_down_for_a_while_gets_every_message_once_urgent_first(
    sessions, tmp_path: Path, outage_s: float
) -> None:
    """The outage is a parameter: CI proves the rule with seconds; ``bench/bench_ris.py``
    runs the two-minute outage and prints its figures."""
    port = free_port()
    loop = loop_for(
        sessions, port, backoff_start_s=0.2, reconnect_max_s=1.0, poll_s=0.05, batch_size=4
    )
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()
    mix = [ROUTINE, SUSPECT, URGENT] * 4
    started = time.monotonic()
    try:
        for index, prediction in enumerate(mix):  # written while the RIS is down
            add_exams(sessions, tmp_path, [prediction], start=index)
            time.sleep(outage_s / len(mix) / 2)
        time.sleep(max(0.0, outage_s - (time.monotonic() - started)))
        tried = hl7_objects(sessions)
        assert all(o.state is ResultState.PENDING for o in tried.values())
        assert sum(o.attempts for o in tried.values()) > 0, "the deliverer kept trying"
        with listener(port, tmp_path / "got.jsonl") as ris:
            wait_until(
                lambda: all(o.state is ResultState.STORED for o in hl7_objects(sessions).values()),
                30,
                "every message delivered",
                [ris.log],
            )
            got = ris.messages()
    finally:
        stop.set()
        thread.join(10)
    counts = Counter(m["control_id"] for m in got)
    assert len(counts) == len(mix) and set(counts.values()) == {1}, "each message once"
    order = [m["tier"] for m in got]
    assert order == ["103391001"] * 4 + ["SUSPECT"] * 4 + ["50811001"] * 4, "urgent first"
