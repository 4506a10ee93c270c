"""The delivery loop against a real pynetdicom Storage SCP and a real database (SQLite and
PostgreSQL): each object stored once, one association per batch, retries by itself with
backoff while the PACS is down, refusals end ``failed``, stored files pruned."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import ResultKind, ResultObject, ResultState, utcnow
from db.results import (
    WrittenObject,
    claim_due,
    objects_of,
    record_unpublishable,
    record_written,
    requeue,
    state_counts,
    summary,
)
from db.worklist import Arrival, admit
from pacs.delivery import FILE_MISSING, REFUSED, Deliverer, DeliveryPolicy
from pacs.store import StorePriority
from tests.pacs.delivery_rows import add_rows
from tests.pacs.scp import StorageSCP, free_port, storage_scp


class Clock:
    """A clock the test moves: backoff is asserted without sleeping."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def scp() -> Iterator[StorageSCP]:
    with storage_scp() as running:
        yield running


def objects(sessions: sessionmaker[Session]) -> list[ResultObject]:
    with sessions() as session:
        return list(session.scalars(select(ResultObject).order_by(ResultObject.id)))


def deliverer(sessions, scp_port: int, clock: Clock, **policy: object) -> Deliverer:
    from pacs.store import PacsNode

    node = PacsNode("127.0.0.1", scp_port, "TEST_PACS", timeout_s=3.0)
    return Deliverer(sessions, node, DeliveryPolicy(**policy), clock=clock)  # type: ignore[arg-type]


def test_each_object_is_stored_once_over_one_association_per_batch(
    sessions, tmp_path, reference_grey, overlay, scp
):
    add_rows(sessions, tmp_path, reference_grey, overlay, 3)
    clock = Clock()
    loop = deliverer(sessions, scp.port, clock, batch_size=4)
    first = loop.deliver_once()
    assert (first.stored, first.retrying, first.failed) == (4, 0, 0)
    assert scp.associations == 1
    # urgent rows first, sent with priority HIGH
    assert scp.priorities[:2] == [StorePriority.HIGH, StorePriority.HIGH]
    assert loop.deliver_once().stored == 2
    assert loop.deliver_once().attempted == 0  # nothing is sent twice
    clock.advance(3600)
    assert loop.deliver_once().attempted == 0
    assert scp.associations == 2
    uids = [ds.SOPInstanceUID for ds in scp.received]
    assert len(uids) == len(set(uids)) == 6
    assert all(o.state is ResultState.STORED and o.attempts == 1 for o in objects(sessions))
    with sessions() as session:
        assert state_counts(session)[ResultState.STORED] == 6


def test_a_pacs_that_is_down_is_retried_with_backoff_until_it_is_up(
    sessions, tmp_path, reference_grey, overlay
):
    add_rows(sessions, tmp_path, reference_grey, overlay, 1)
    port = free_port()
    clock = Clock()
    loop = deliverer(sessions, port, clock, backoff_start_s=10, backoff_max_s=40)
    waits = []
    for _ in range(4):
        report = loop.deliver_once()
        assert report.retrying == 2 and "could not be reached" in (report.error or "")
        pending = objects(sessions)
        assert all(o.state is ResultState.PENDING for o in pending)
        waits.append((pending[0].next_attempt_at - clock.now).total_seconds())
        assert loop.deliver_once().attempted == 0  # not due before its backoff
        clock.advance(waits[-1])
    assert waits == [10, 20, 40, 40]  # doubling, capped
    assert "could not be reached" in (objects(sessions)[0].last_error or "")
    with sessions() as session:
        assert (
            summary(
                objects_of(session, [objects(sessions)[0].entry_id])[objects(sessions)[0].entry_id]
            )
            == "pending (4 attempts)"
        )
    with storage_scp(port) as scp:
        assert loop.deliver_once().stored == 2
        assert len(scp.received) == 2
    assert all(o.state is ResultState.STORED and o.attempts == 5 for o in objects(sessions))


def test_an_object_the_pacs_refuses_for_good_fails_at_once_and_is_resent_by_the_operator(
    sessions, tmp_path, reference_grey, overlay, scp
):
    [entry_id] = add_rows(sessions, tmp_path, reference_grey, overlay, 1)
    scp.status = 0xA900  # Data Set does not match SOP Class: the same answer every time
    clock = Clock()
    loop = deliverer(sessions, scp.port, clock, backoff_start_s=1)
    assert loop.deliver_once().failed == 2
    clock.advance(3600)
    assert loop.deliver_once().attempted == 0
    failed = objects(sessions)
    assert all(o.state is ResultState.FAILED and o.reason == REFUSED for o in failed)
    assert all(o.attempts == 1 for o in failed)
    assert "0xA900 error: data set does not match SOP Class" in (failed[0].last_error or "")
    with sessions() as session:
        assert summary(objects_of(session, [entry_id])[entry_id]) == f"failed: {REFUSED}"
    # the operator fixes the PACS and re-sends the failed ones
    scp.status = 0x0000
    with sessions.begin() as session:
        assert requeue(session, clock.now) == 2
    assert loop.deliver_once().stored == 2


def test_a_result_file_gone_from_the_outbox_is_failed_not_retried_forever(
    sessions, tmp_path, reference_grey, overlay, scp
):
    add_rows(sessions, tmp_path, reference_grey, overlay, 1)
    sr = objects(sessions)[0]
    Path(sr.path or "").unlink()
    report = deliverer(sessions, scp.port, Clock()).deliver_once()
    assert (report.stored, report.failed) == (1, 1)
    states = {o.kind: (o.state, o.reason) for o in objects(sessions)}
    assert states[ResultKind.SR] == (ResultState.FAILED, FILE_MISSING)
    assert states[ResultKind.SC] == (ResultState.STORED, None)


def test_a_rewritten_stored_object_is_not_sent_again(
    sessions, tmp_path, reference_grey, overlay, scp
):
    [entry_id] = add_rows(sessions, tmp_path, reference_grey, overlay, 1)
    loop = deliverer(sessions, scp.port, Clock())
    assert loop.deliver_once().stored == 2
    again = [
        WrittenObject(o.kind, o.sop_instance_uid or "", o.path or "") for o in objects(sessions)
    ]
    with sessions.begin() as session:  # a redelivered results task writes the same objects
        record_written(session, entry_id, again, utcnow())
    assert loop.deliver_once().attempted == 0
    assert len(scp.received) == 2


def test_an_operator_can_resend_one_rows_stored_results(
    sessions, tmp_path, reference_grey, overlay, scp
):
    _, second = add_rows(sessions, tmp_path, reference_grey, overlay, 2)
    clock = Clock()
    loop = deliverer(sessions, scp.port, clock)
    assert loop.deliver_once().stored == 4
    with sessions.begin() as session:
        assert requeue(session, clock.now) == 0  # nothing failed
        assert requeue(session, clock.now, entry_id=second, include_stored=True) == 2
    assert loop.deliver_once().stored == 2
    assert len(scp.received) == 6


def test_stored_files_leave_the_outbox_after_the_retention(
    sessions, tmp_path, reference_grey, overlay, scp
):
    add_rows(sessions, tmp_path, reference_grey, overlay, 1)
    Path(objects(sessions)[0].path or "").unlink()  # the SR fails: only stored files are pruned
    clock = Clock()
    loop = deliverer(sessions, scp.port, clock, retention=timedelta(hours=1))
    loop.deliver_once()
    sc_path = Path(objects(sessions)[1].path or "")
    assert loop.prune() == 0
    clock.advance(3601)
    assert loop.prune() == 1
    assert not sc_path.exists()
    sc = objects(sessions)[1]
    assert sc.path is None and sc.state is ResultState.STORED  # the row stays


def test_two_loops_never_claim_the_same_object(sessions, tmp_path, reference_grey, overlay):
    add_rows(sessions, tmp_path, reference_grey, overlay, 3)
    now = utcnow()
    lease = timedelta(minutes=5)
    with sessions.begin() as session:
        one = [o.id for o in claim_due(session, now, 4, lease, "one")]
    with sessions.begin() as session:
        two = [o.id for o in claim_due(session, now, 4, lease, "two")]
    assert len(one) == 4 and len(two) == 2 and not set(one) & set(two)
    with sessions.begin() as session:
        assert claim_due(session, now + timedelta(minutes=6), 10, lease, "three")


def test_a_row_without_results_shows_failed_with_the_reason(sessions, tmp_path):
    with sessions.begin() as session:
        entry, _ = admit(session, Arrival("f" * 64, "x.dcm", "/inbox/x.dcm", "dicom"))
        record_unpublishable(
            session, entry.id, "source_unreferenceable", "no (0020,000D)", utcnow()
        )
        found = objects_of(session, [entry.id])[entry.id]
    assert [o.kind for o in found] == [ResultKind.SR, ResultKind.SC]
    assert summary(found) == "failed: source_unreferenceable"
    assert all(o.last_error == "no (0020,000D)" and o.sop_instance_uid is None for o in found)


def test_a_hung_pacs_costs_the_loop_its_timeout_and_the_objects_stay_pending(
    sessions, tmp_path, reference_grey, overlay, scp
):
    add_rows(sessions, tmp_path, reference_grey, overlay, 1)
    scp.delay_s = 5.0  # longer than the 3 s DIMSE timeout
    clock = Clock()
    report = deliverer(sessions, scp.port, clock, batch_size=2).deliver_once()
    assert report.stored == 0 and report.retrying == 2
    assert all(o.state is ResultState.PENDING for o in objects(sessions))


def test_the_loop_runs_until_stopped(sessions, tmp_path, reference_grey, overlay, scp):
    add_rows(sessions, tmp_path, reference_grey, overlay, 2)
    loop = deliverer(sessions, scp.port, Clock(), poll_s=0.05, batch_size=3)
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,))
    thread.start()
    try:
        for _ in range(200):
            if len(scp.received) == 4:
                break
            stop.wait(0.05)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert len(scp.received) == 4
    assert scp.associations == 2  # batches of three: back to back while objects were due
