"""``cxr-triage pacs-send`` as an operator runs it, against a real Storage SCP."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.uid import JPEGBaseline8Bit
from sqlalchemy import select

from db.models import ResultObject, ResultState, utcnow
from db.results import mark_attempt
from model.overlay import overlay_heatmap
from tests.pacs.delivery_rows import add_rows
from tests.pacs.scp import SCP_AE_TITLE, free_port, rejecting_peer, storage_scp
from tests.processes import CLI, running, service_env
from tests.support import closed_port, wait_until
from tests.support.pacs import pneumonia_grey, synthetic_heatmap
from worker.cli.pacs_commands import CONFIGURATION_POLL_S


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


def test_pacs_send_starts_a_fresh_schedule_so_one_more_refusal_does_not_fail_them(
    database_url, sessions, tmp_path: Path, reference_grey, overlay
):
    """The review's finding: after an outage the objects had 5 attempts; ``pacs-send`` kept
    them, and one more 0xA700 failed them again at once."""
    add_rows(sessions, tmp_path, reference_grey, overlay, 1)
    with sessions.begin() as session:  # five attempts, then given up
        for obj in session.scalars(select(ResultObject)):
            for attempt in range(5):
                final = attempt == 4
                due = None if final else utcnow()
                mark_attempt(session, obj.id, utcnow(), "0xA700", due, "retries_exhausted")
    with storage_scp() as scp:
        scp.status = 0xA700  # still short of space when the operator re-sends
        env = service_env(
            tmp_path,
            database_url,
            None,
            CXR_PACS_HOST="127.0.0.1",
            CXR_PACS_PORT=str(scp.port),
            CXR_PACS_AE_TITLE=SCP_AE_TITLE,
            CXR_PACS_TIMEOUT_S="10",
        )
        sent = pacs_send(env)
        assert len(scp.received) == 2
    assert sent.returncode == 1, sent.stdout + sent.stderr  # not stored yet, and it says so
    with sessions() as session:
        found = list(session.scalars(select(ResultObject)))
    assert {(o.state, o.attempts) for o in found} == {(ResultState.PENDING, 1)}
    assert all("out of resources (temporary)" in (o.last_error or "") for o in found)


def pacs_echo(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "pacs-echo"], env=env, capture_output=True, text=True, timeout=120)


def echo_env(tmp_path: Path, port: int, **extra: str) -> dict[str, str]:
    values = {
        "CXR_PACS_HOST": "127.0.0.1",
        "CXR_PACS_PORT": str(port),
        "CXR_PACS_AE_TITLE": SCP_AE_TITLE,
        "CXR_PACS_TIMEOUT_S": "10",
    }
    values.update(extra)
    return service_env(tmp_path, f"sqlite:///{tmp_path / 'unused.sqlite3'}", None, **values)


def test_pacs_echo_says_the_pacs_answers_and_takes_both_results(tmp_path: Path):
    with storage_scp() as scp:
        result = pacs_echo(echo_env(tmp_path, scp.port))
    assert result.returncode == 0, result.stderr
    assert f"C-ECHO CXR_TRIAGE -> TEST_PACS@127.0.0.1:{scp.port}: success (0x0000)" in (
        result.stdout
    )
    assert "Comprehensive SR Storage: accepted (" in result.stdout
    sc_line = next(line for line in result.stdout.splitlines() if line.startswith("Secondary"))
    assert sc_line.startswith("Secondary Capture Image Storage: accepted (")
    assert "VR Little Endian" in sc_line and "JPEG Baseline (Process 1)" in sc_line
    assert scp.received == []  # an echo stores nothing


def test_pacs_echo_says_why_it_failed(tmp_path: Path):
    none = pacs_echo(service_env(tmp_path, f"sqlite:///{tmp_path / 'x.sqlite3'}", None))
    assert none.returncode == 2 and "no PACS configured" in none.stderr
    with closed_port() as port:
        down = pacs_echo(echo_env(tmp_path, port, CXR_PACS_TIMEOUT_S="2"))
    assert down.returncode == 1 and "could not be reached" in down.stderr
    with storage_scp() as scp:
        wrong = pacs_echo(echo_env(tmp_path, scp.port, CXR_PACS_AE_TITLE="NOT_THE_PACS"))
    assert wrong.returncode == 1
    assert "rejected the association permanently: called AE title not recognised" in wrong.stderr
    assert "call itself NOT_THE_PACS (CXR_PACS_AE_TITLE)" in wrong.stderr
    with storage_scp(calling_ae_titles=["MODALITY"]) as scp:
        unknown = pacs_echo(echo_env(tmp_path, scp.port))
    assert unknown.returncode == 1
    assert "calling AE title not recognised (register this AE title" in unknown.stderr
    with rejecting_peer(2, 3, 1) as busy:
        congested = pacs_echo(echo_env(tmp_path, busy.port))
    assert congested.returncode == 1
    assert "rejected the association for now: temporary congestion" in congested.stderr
    with storage_scp(syntaxes=[JPEGBaseline8Bit]) as scp:
        jpeg_only = pacs_echo(echo_env(tmp_path, scp.port))
    assert jpeg_only.returncode == 1
    assert "Comprehensive SR Storage: REFUSED" in jpeg_only.stderr


def _alive(env: dict[str, str], loop: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "status", "--alive", loop], env=env, capture_output=True, text=True, timeout=60
    )


def test_deliver_without_a_pacs_waits_politely_until_one_is_configured(
    database_url, sessions, tmp_path: Path, reference_grey, overlay
):
    """With the compose ``pacs`` profile and no PACS host, ``deliver`` exited 2 and was
    restarted for ever (issue 21). It now says so once, stays up and healthy, reads its
    settings again, and delivers once a PACS is configured (here: in its settings file)."""
    add_rows(sessions, tmp_path, reference_grey, overlay, 1)
    settings_file = tmp_path / "cxr.env"
    settings_file.write_text("CXR_LOG_LEVEL=INFO\n")
    env = service_env(tmp_path, database_url, None, CXR_SETTINGS_FILE=str(settings_file))
    log = tmp_path / "deliver.log"
    with storage_scp() as scp, running(["deliver"], env, log) as process:
        wait_until(lambda: _alive(env, "deliver").returncode == 0, 60, "a heartbeat", [log])
        assert process.poll() is None
        time.sleep(2 * CONFIGURATION_POLL_S)  # a few passes: still said once
        assert log.read_text().count("no PACS configured") == 1, log.read_text()
        assert states(sessions) == [ResultState.PENDING] * 2  # kept for later
        settings_file.write_text(
            f"CXR_PACS_HOST=127.0.0.1\nCXR_PACS_PORT={scp.port}\nCXR_PACS_AE_TITLE={SCP_AE_TITLE}\n"
        )
        wait_until(
            lambda: states(sessions) == [ResultState.STORED] * 2, 60, "the results stored", [log]
        )
        assert f"delivering results to {SCP_AE_TITLE}@127.0.0.1:{scp.port}" in log.read_text()
        assert len(scp.received) == 2
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    assert _alive(env, "deliver").returncode == 1  # stopped: no longer alive
