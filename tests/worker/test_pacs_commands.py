"""``cxr-triage pacs-send`` as an operator runs it, against a real Storage SCP."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from db.models import ResultObject, ResultState, utcnow
from db.results import mark_attempt
from model.overlay import overlay_heatmap
from tests.pacs.delivery_rows import add_rows
from tests.pacs.scp import SCP_AE_TITLE, free_port, storage_scp
from tests.processes import CLI, service_env
from tests.support.pacs import pneumonia_grey, synthetic_heatmap


@pytest.fixture
def reference_grey() -> np.ndarray:
    return pneumonia_grey()


@pytest.fixture
def overlay(reference_grey: np.ndarray) -> Image.Image:
    return overlay_heatmap(reference_grey.astype(np.float32), synthetic_heatmap())


def pacs_send(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "pacs-send", *args], env=env, capture_output=True, text=True, timeout=120
    )


def states(sessions) -> list[ResultState]:
    with sessions() as session:
        return [o.state for o in session.scalars(select(ResultObject).order_by(ResultObject.id))]


def test_pacs_send_resends_failed_objects_then_one_rows_on_request(
    database_url, sessions, tmp_path: Path, reference_grey, overlay
):
    first, second = add_rows(sessions, tmp_path, reference_grey, overlay, 2)
    with sessions.begin() as session:  # the delivery loop gave up on the first row's objects
        for obj in session.scalars(select(ResultObject).where(ResultObject.entry_id == first)):
            mark_attempt(session, obj.id, utcnow(), "refused: status 0xA700", None, "refused")
    with storage_scp() as scp:
        env = service_env(
            tmp_path,
            database_url,
            None,
            CXR_PACS_HOST="127.0.0.1",
            CXR_PACS_PORT=str(scp.port),
            CXR_PACS_AE_TITLE=SCP_AE_TITLE,
            CXR_PACS_TIMEOUT_S="5",
        )
        sent = pacs_send(env)
        assert sent.returncode == 0, sent.stderr
        # the failed two, and the second row's two that were pending anyway; each once
        assert "stored 4 object(s)" in sent.stdout
        assert states(sessions) == [ResultState.STORED] * 4
        assert pacs_send(env).stdout.startswith("stored 0")  # nothing failed: nothing sent
        again = pacs_send(env, "--row", str(second))
        assert again.returncode == 0 and "stored 2 object(s)" in again.stdout
        assert len(scp.received) == 6
        uids = [ds.SOPInstanceUID for ds in scp.received]
        assert len(set(uids)) == 4


def test_pacs_send_says_why_when_the_pacs_is_down_or_not_configured(
    database_url, sessions, tmp_path: Path, reference_grey, overlay
):
    add_rows(sessions, tmp_path, reference_grey, overlay, 1)
    env = service_env(tmp_path, database_url, None)
    unconfigured = pacs_send(env)
    assert unconfigured.returncode == 2 and "no PACS configured" in unconfigured.stderr
    env.update(CXR_PACS_HOST="127.0.0.1", CXR_PACS_PORT=str(free_port()), CXR_PACS_TIMEOUT_S="2")
    down = pacs_send(env)
    assert down.returncode == 1 and "could not be reached" in down.stderr
    assert states(sessions) == [ResultState.PENDING] * 2  # still queued for the loop


def test_pacs_send_for_a_row_whose_files_are_gone_has_the_worker_rebuild_them(
    database_url, sessions, tmp_path: Path, reference_grey, overlay, redis_url
):
    import json

    import redis

    [row] = add_rows(sessions, tmp_path, reference_grey, overlay, 1)
    with sessions() as session:
        for obj in session.scalars(select(ResultObject)):
            Path(obj.path or "").unlink()  # pruned after the retention, and the PACS lost them
    env = service_env(
        tmp_path,
        database_url,
        redis_url,
        CXR_PACS_HOST="127.0.0.1",
        CXR_PACS_PORT=str(free_port()),
        CXR_PACS_TIMEOUT_S="2",
    )
    result = pacs_send(env, "--row", str(row))
    assert "rebuilt by the worker" in result.stdout, result.stderr
    with sessions() as session:
        found = list(session.scalars(select(ResultObject)))
    assert {(o.state, o.reason) for o in found} == {(ResultState.FAILED, "rebuilding")}
    client = redis.Redis.from_url(redis_url)
    messages = [json.loads(m) for m in client.lrange("cxr.results", 0, -1)]
    assert [m["headers"]["task"] for m in messages] == ["cxr.publish"]
    assert messages[0]["headers"]["argsrepr"] == f"([{row}],)"  # the row id, nothing else
