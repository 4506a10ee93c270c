"""A result queue that outlasts outages (issue 20, part 4), on real peers and databases:

- one unreadable file in the outbox fails alone, its batch-mates are stored;
- a temporary refusal (0xA7xx) or an unreachable PACS is retried for hours, then given up;
- a permanent refusal (0xA9xx, 0xCxxx, 0x0122, 0x0124) fails at once, the status in words;
- a permanent association rejection fails at once with its reason, a transient one retries;
- an SC is sent uncompressed to a PACS that refuses JPEG Baseline;
- a deliverer that lost its claim records nothing over the new holder's outcome.

Each of these failed on the code before (findings of the second red-team review).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit
from sqlalchemy import select

from db.models import ResultKind, ResultObject, ResultState
from db.results import claim_due, mark_stored, requeue
from pacs.delivery import (
    ASSOCIATION_REJECTED,
    REFUSED,
    RETRIES_EXHAUSTED,
    UNREADABLE,
    Deliverer,
    DeliveryPolicy,
)
from pacs.store import PacsNode
from tests.pacs.delivery_rows import add_rows
from tests.pacs.scp import SCP_AE_TITLE, StorageSCP, free_port, rejecting_peer, storage_scp
from tests.pacs.test_delivery import Clock, objects


@pytest.fixture
def scp() -> Iterator[StorageSCP]:
    with storage_scp() as running:
        yield running


def loop_for(sessions, node: PacsNode, clock: Clock, **policy: object) -> Deliverer:
    return Deliverer(sessions, node, DeliveryPolicy(**policy), clock=clock)  # type: ignore[arg-type]


def node_of(port: int, **overrides: object) -> PacsNode:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "called_ae_title": SCP_AE_TITLE,
        "timeout_s": 10.0,  # a shared 2-core machine: a C-STORE can take seconds
    }
    values.update(overrides)
    return PacsNode(**values)  # type: ignore[arg-type]


def by_kind(sessions) -> dict[tuple[int, ResultKind], ResultObject]:
    return {(o.entry_id, o.kind): o for o in objects(sessions)}


def run_until_quiet(loop: Deliverer, clock: Clock, sessions, horizon_h: float) -> int:
    """Pass after pass, the clock moved to the next due object, for ``horizon_h`` hours of
    clock or until nothing is pending; returns the passes made."""
    passes = 0
    end = clock.now + timedelta(hours=horizon_h)
    while clock.now < end:
        loop.deliver_once()
        passes += 1
        pending = [o for o in objects(sessions) if o.state is ResultState.PENDING]
        if not pending:
            break
        due = min(o.next_attempt_at for o in pending if o.next_attempt_at is not None)
        clock.now = max(clock.now, due)
    return passes


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_one_unreadable_result_file_fails_alone_and_its_batch_is_stored(
    sessions, tmp_path, reference_grey, overlay, scp, damage
):
    _, second, _ = add_rows(sessions, tmp_path, reference_grey, overlay, 3)
    rows = by_kind(sessions)
    broken = Path(rows[(second, ResultKind.SC)].path or "")
    data = broken.read_bytes()
    broken.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    clock = Clock()
    report = loop_for(sessions, node_of(scp.port), clock, batch_size=32).deliver_once()
    assert (report.stored, report.failed, report.retrying) == (5, 1, 0)
    rows = by_kind(sessions)
    bad = rows[(second, ResultKind.SC)]
    assert bad.state is ResultState.FAILED and bad.reason == UNREADABLE
    assert bad.attempts == 1 and bad.claim_token is None
    words = "the file is empty (0 bytes)" if damage == "empty" else "it may be truncated"
    assert words in (bad.last_error or "")
    others = [o for key, o in rows.items() if key != (second, ResultKind.SC)]
    assert all(o.state is ResultState.STORED for o in others)
    assert len(scp.received) == 5 and scp.associations == 1
    clock.advance(3600)  # nothing is claimed again, nothing blocked
    assert loop_for(sessions, node_of(scp.port), clock).deliver_once().attempted == 0


def test_a_result_file_replaced_by_another_object_is_never_sent(
    sessions, tmp_path, reference_grey, overlay, scp
):
    first, second = add_rows(sessions, tmp_path, reference_grey, overlay, 2)
    rows = by_kind(sessions)
    # the second row's SR file now holds the first row's SR (another patient's, in real life)
    victim = Path(rows[(second, ResultKind.SR)].path or "")
    victim.write_bytes(Path(rows[(first, ResultKind.SR)].path or "").read_bytes())
    report = loop_for(sessions, node_of(scp.port), Clock()).deliver_once()
    assert report.failed == 1
    bad = by_kind(sessions)[(second, ResultKind.SR)]
    assert bad.reason == UNREADABLE and "the file was replaced" in (bad.last_error or "")
    uids = [ds.SOPInstanceUID for ds in scp.received]
    assert len(uids) == len(set(uids)) == 3


def test_a_short_out_of_resources_spell_costs_nothing(
    sessions, tmp_path, reference_grey, overlay, scp
):
    """The review's reproduction: 0xA700 for 31 s turned objects failed after 5 attempts."""
    add_rows(sessions, tmp_path, reference_grey, overlay, 1)
    scp.statuses = [0xA700] * 12  # six passes of two objects
    clock = Clock()
    loop = loop_for(sessions, node_of(scp.port), clock)
    run_until_quiet(loop, clock, sessions, horizon_h=1)
    stored = objects(sessions)
    assert all(o.state is ResultState.STORED for o in stored), [o.last_error for o in stored]
    assert all(o.attempts == 7 for o in stored)


def test_a_temporary_refusal_is_retried_for_hours_then_given_up_in_words(
    sessions, tmp_path, reference_grey, overlay, scp
):
    add_rows(sessions, tmp_path, reference_grey, overlay, 1)
    scp.status = 0xA702  # out of resources, for ever
    clock = Clock()
    start = clock.now
    policy = {"give_up_after": timedelta(hours=6), "backoff_max_s": 1800.0}
    loop = loop_for(sessions, node_of(scp.port), clock, **policy)
    loop.deliver_once()
    pending = objects(sessions)
    assert all(o.state is ResultState.PENDING for o in pending)
    assert "0xA702 refused: out of resources (temporary)" in (pending[0].last_error or "")
    assert "retried until" in (pending[0].last_error or "")
    run_until_quiet(loop, clock, sessions, horizon_h=5.9)
    assert all(o.state is ResultState.PENDING and o.attempts > 5 for o in objects(sessions))
    run_until_quiet(loop, clock, sessions, horizon_h=1)
    failed = objects(sessions)
    assert all(o.state is ResultState.FAILED and o.reason == RETRIES_EXHAUSTED for o in failed)
    # the last try is at the give-up time: 6 h after the row was written (just before start)
    assert timedelta(hours=6) - timedelta(seconds=10) < clock.now - start <= timedelta(hours=6)
    assert "still not stored 6 h after the first try" in (failed[0].last_error or "")


def test_an_unreachable_pacs_is_retried_until_the_give_up_time(
    sessions, tmp_path, reference_grey, overlay
):
    add_rows(sessions, tmp_path, reference_grey, overlay, 1)
    clock = Clock()
    loop = loop_for(
        sessions, node_of(free_port()), clock, give_up_after=timedelta(hours=1), backoff_max_s=900
    )
    run_until_quiet(loop, clock, sessions, horizon_h=2)
    failed = objects(sessions)
    assert all(o.state is ResultState.FAILED and o.reason == RETRIES_EXHAUSTED for o in failed)
    assert "could not be reached" in (failed[0].last_error or "")
    # the operator's re-send starts a fresh schedule: attempts and give-up time from now
    with sessions.begin() as session:
        assert requeue(session, clock.now) == 2
    fresh = objects(sessions)
    assert all(o.attempts == 0 and o.schedule_started_at == clock.now for o in fresh)
    loop.deliver_once()
    assert all(o.state is ResultState.PENDING and o.attempts == 1 for o in objects(sessions))


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (0xA900, "data set does not match SOP Class"),
        (0xC123, "cannot understand"),
        (0x0122, "SOP Class not supported"),
        (0x0124, "not authorised"),
    ],
)
def test_a_permanent_refusal_fails_at_once_with_the_status_in_words(
    sessions, tmp_path, reference_grey, overlay, scp, status, words
):
    add_rows(sessions, tmp_path, reference_grey, overlay, 1)
    scp.status = status
    report = loop_for(sessions, node_of(scp.port), Clock()).deliver_once()
    assert report.failed == 2
    for obj in objects(sessions):
        assert (obj.state, obj.reason, obj.attempts) == (ResultState.FAILED, REFUSED, 1)
        assert f"0x{status:04X}" in (obj.last_error or "") and words in (obj.last_error or "")


@pytest.mark.parametrize(
    ("wrong", "words"),
    [
        ("called", "called AE title not recognised"),
        ("calling", "calling AE title not recognised"),
    ],
)
def test_a_pacs_that_does_not_know_our_ae_title_fails_the_results_at_once(
    sessions, tmp_path, reference_grey, overlay, wrong, words
):
    add_rows(sessions, tmp_path, reference_grey, overlay, 1)
    with storage_scp(calling_ae_titles=["SOMEONE_ELSE"] if wrong == "calling" else ()) as scp:
        node = node_of(scp.port, called_ae_title="WRONG_AE" if wrong == "called" else SCP_AE_TITLE)
        report = loop_for(sessions, node, Clock()).deliver_once()
        assert scp.received == []
    assert report.failed == 2 and "rejected the association permanently" in (report.error or "")
    for obj in objects(sessions):
        assert (obj.state, obj.reason) == (ResultState.FAILED, ASSOCIATION_REJECTED)
        assert words in (obj.last_error or "")


@pytest.mark.parametrize(
    ("rejection", "permanent", "words"),
    [
        ((1, 1, 1), True, "permanently: no reason given"),
        ((1, 2, 2), True, "permanently: protocol version not supported"),
        ((2, 1, 1), False, "for now: no reason given"),
        ((2, 3, 1), False, "for now: temporary congestion"),
        ((1, 3, 2), False, "for now: local limit exceeded"),
    ],
    ids=["permanent", "permanent-acse", "transient", "congestion", "limit-called-permanent"],
)
def test_association_rejections_fail_at_once_when_permanent_and_retry_when_transient(
    sessions, tmp_path, reference_grey, overlay, rejection, permanent, words
):
    add_rows(sessions, tmp_path, reference_grey, overlay, 1)
    with rejecting_peer(*rejection) as peer:
        report = loop_for(sessions, peer.node(timeout_s=10.0), Clock()).deliver_once()
        assert peer.requests == 1
    found = objects(sessions)
    expected = ResultState.FAILED if permanent else ResultState.PENDING
    assert all(o.state is expected for o in found), [o.last_error for o in found]
    assert words in (found[0].last_error or "")
    assert (report.failed, report.retrying) == ((2, 0) if permanent else (0, 2))


@pytest.mark.parametrize(
    "syntaxes", [[ExplicitVRLittleEndian], [ImplicitVRLittleEndian]], ids=["explicit", "implicit"]
)
def test_the_sc_goes_uncompressed_to_a_pacs_that_refuses_jpeg(
    sessions, tmp_path, reference_grey, overlay, syntaxes
):
    [entry_id] = add_rows(sessions, tmp_path, reference_grey, overlay, 1)
    sc_file = Path(by_kind(sessions)[(entry_id, ResultKind.SC)].path or "")
    written = pydicom.dcmread(sc_file)
    assert written.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    with storage_scp(syntaxes=syntaxes) as scp:
        report = loop_for(sessions, node_of(scp.port), Clock()).deliver_once()
        assert report.stored == 2
        arrived = {str(ds.SOPClassUID): ds for ds in scp.received}
    sc = arrived[str(written.SOPClassUID)]
    assert sc.SOPInstanceUID == written.SOPInstanceUID  # the same object, not a new one
    assert sc.file_meta.TransferSyntaxUID in syntaxes
    assert sc.PhotometricInterpretation == "RGB" and sc.LossyImageCompression == "01"
    from pydicom.pixels import pixel_array

    expected = pixel_array(written, decoding_plugin="pillow")  # YBR -> RGB as pydicom does
    np.testing.assert_array_equal(sc.pixel_array, expected)
    assert sc_file.read_bytes()[:0] == b""  # the outbox file itself is unchanged
    assert pydicom.dcmread(sc_file).file_meta.TransferSyntaxUID == JPEGBaseline8Bit


def test_a_pacs_that_takes_no_uncompressed_object_fails_the_sr_alone_in_words(
    sessions, tmp_path, reference_grey, overlay
):
    [entry_id] = add_rows(sessions, tmp_path, reference_grey, overlay, 1)
    with storage_scp(syntaxes=[JPEGBaseline8Bit]) as scp:  # no uncompressed syntax at all
        report = loop_for(sessions, node_of(scp.port), Clock()).deliver_once()
    rows = by_kind(sessions)
    sr, sc = rows[(entry_id, ResultKind.SR)], rows[(entry_id, ResultKind.SC)]
    assert (report.stored, report.failed) == (1, 1)
    assert sc.state is ResultState.STORED
    assert sr.reason == REFUSED and sr.attempts == 1
    assert "accepted no presentation context for SOP Class 1.2.840.10008.5.1.4.1.1.88.33" in (
        sr.last_error or ""
    )


def test_a_deliverer_that_lost_its_claim_records_nothing_over_the_new_holder(
    sessions, tmp_path, reference_grey, overlay
):
    add_rows(sessions, tmp_path, reference_grey, overlay, 1)
    clock = Clock()
    lease = timedelta(seconds=30)
    with sessions.begin() as session:
        first = [o.id for o in claim_due(session, clock.now, 2, lease, "dead", "host:1")]
    with sessions() as session:
        held = session.scalars(select(ResultObject)).all()
        assert {(o.claim_token, o.claimed_by) for o in held} == {("dead", "host:1")}
    clock.advance(31)  # the holder stopped renewing: another deliverer takes them
    with sessions.begin() as session:
        second = [o.id for o in claim_due(session, clock.now, 2, lease, "alive")]
    assert first == second
    with sessions.begin() as session:
        assert mark_stored(session, first, clock.now, "dead") == 0  # too late: not its own
        assert mark_stored(session, first, clock.now, "alive") == 2
    assert all(o.state is ResultState.STORED and o.claim_token is None for o in objects(sessions))
