"""The operator's commands for the RIS path, as real CLI processes: ``ris-echo`` (an MLLP
connection and the FHIR CapabilityStatement, no message sent), ``ris-send`` (a message the
RIS refused, sent again once the cause is fixed) and ``status`` (the RIS messages apart)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from db.models import ResultKind, ResultState
from tests.processes import CLI
from tests.ris.support import URGENT, add_exams, fhir_server, listener
from tests.ris.test_mllp_delivery import hl7_objects, loop_for
from tests.support import free_port


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def environment(tmp_path: Path, database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    env.update(CXR_DATA_DIR=str(tmp_path / "data"), CXR_DATABASE_URL=database_url, **extra)
    return env


def test_ris_echo_says_whether_the_destinations_answer(tmp_path: Path, database_url: str) -> None:
    assert run(["ris-echo"], environment(tmp_path, database_url)).returncode == 2
    port = free_port()
    env = environment(tmp_path, database_url, CXR_RIS_HOST="127.0.0.1", CXR_RIS_PORT=str(port))
    down = run(["ris-echo"], env)
    assert down.returncode == 1 and "unreachable" in down.stderr
    fhir_port = free_port()
    env.update(CXR_FHIR_BASE_URL=f"http://127.0.0.1:{fhir_port}/fhir", CXR_FHIR_TOKEN="t")
    with (
        listener(port, tmp_path / "ris.jsonl") as ris,
        fhir_server(fhir_port, tmp_path / "fhir.jsonl", "t"),
    ):
        up = run(["ris-echo"], env)
        assert ris.messages() == []  # nothing sent to the RIS
    assert up.returncode == 0, up.stderr
    assert f"RIS MLLP 127.0.0.1:{port}: connected" in up.stdout
    assert "CapabilityStatement, FHIR 4.0.1" in up.stdout


def test_ris_send_sends_a_refused_message_again_and_status_counts_it(
    tmp_path: Path, database_url: str, sessions
) -> None:
    [entry_id] = add_exams(sessions, tmp_path, [URGENT])
    port = free_port()
    with listener(port, tmp_path / "ris.jsonl", then="AE:101") as ris:
        loop_for(sessions, port).deliver_once()
    assert hl7_objects(sessions)[entry_id].state is ResultState.FAILED
    env = environment(tmp_path, database_url, CXR_RIS_HOST="127.0.0.1", CXR_RIS_PORT=str(port))
    status = run(["status"], env)
    assert "ris hl7: pending=0  stored=0  failed=1" in status.stdout, status.stdout + status.stderr
    with listener(port, tmp_path / "ris.jsonl") as ris:  # the RIS's interface fixed
        sent = run(["ris-send"], env)
        got = ris.messages()
    assert sent.returncode == 0, sent.stderr
    assert "sent 1 message(s)" in sent.stdout
    assert [m["answer"] for m in got] == ["AE:101", "AA"]
    assert got[0]["control_id"] == got[1]["control_id"]
    obj = hl7_objects(sessions)[entry_id]
    assert (obj.kind, obj.state) == (ResultKind.HL7, ResultState.STORED)
    assert "ris hl7: pending=0  stored=1  failed=0" in run(["status"], env).stdout
