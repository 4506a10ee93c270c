"""A deliverer killed with a batch in flight (SIGKILL, as the OOM killer or a lost host
would): its objects are taken back by another deliverer within a minute, with the default
settings, each stored once. Before: they waited out a lease of the PACS timeout times the
batch size plus three (30 s x 35 = 17.5 min with the defaults), urgent results included."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from db.models import ResultObject, ResultState
from tests.pacs.delivery_rows import add_rows
from tests.pacs.scp import SCP_AE_TITLE, storage_scp
from tests.processes import running, service_env
from tests.support import wait_until

pytestmark = pytest.mark.slow


def objects(sessions) -> list[ResultObject]:
    with sessions() as session:
        return list(session.scalars(select(ResultObject).order_by(ResultObject.id)))


def test_a_killed_deliverers_batch_is_stored_by_another_within_a_minute(
    database_url, sessions, tmp_path: Path, reference_grey, overlay
):
    add_rows(sessions, tmp_path, reference_grey, overlay, 2)
    with storage_scp() as scp:
        scp.delay_s = 3600  # hung: the first C-STORE is never answered while the first lives
        env = service_env(
            tmp_path,
            database_url,
            None,
            CXR_PACS_HOST="127.0.0.1",
            CXR_PACS_PORT=str(scp.port),
            CXR_PACS_AE_TITLE=SCP_AE_TITLE,
        )  # every CXR_RESULTS_* and CXR_PACS_TIMEOUT_S at its default
        logs = [tmp_path / "deliver-1.log", tmp_path / "deliver-2.log"]
        with running(["deliver"], env, logs[0]) as first:
            wait_until(lambda: scp.calls == 1, 60, "the first C-STORE in flight", logs)
            held = objects(sessions)
            assert {o.claimed_by for o in held} == {f"{os.uname().nodename}:{first.pid}"}
            assert all(o.claim_token for o in held)
            os.killpg(first.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            first.wait()
        scp.delay_s = 0
        with running(["deliver"], env, logs[1]):
            wait_until(
                lambda: all(o.state is ResultState.STORED for o in objects(sessions)),
                90,
                "the killed deliverer's objects stored by the second",
                logs,
            )
            taken_back_s = time.monotonic() - killed_at
    print(f"killed deliverer's batch stored {taken_back_s:.1f} s after the kill")
    assert taken_back_s < 60
    stored = objects(sessions)
    assert all(o.claim_token is None and o.claimed_by is None for o in stored)
    uids = [ds.SOPInstanceUID for ds in scp.received]
    # the hung C-STORE is answered at shutdown at the latest; each object stored once after
    assert len(set(uids)) == 4
