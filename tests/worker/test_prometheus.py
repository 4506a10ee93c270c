"""Worker metrics: counts from real pipeline outcomes, and the prefork children's sum served
over HTTP in multiprocess mode."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from db.models import utcnow
from ingest.errors import Reason
from model.prediction import Label, Prediction, Priority
from tests.support import free_port
from worker.outcomes import Failed, Rejected, Scored
from worker.prometheus import WorkerMetrics

REPO = Path(__file__).resolve().parents[2]
PREDICTION = Prediction(0.9, Label.PNEUMONIA, Priority.URGENT, 0.4, "sepcnn-test-1.0")


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def test_a_batch_counts_statuses_reasons_turnaround_and_model_version():
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    now = utcnow()
    outcomes = [
        Scored(1, Path("archive/1"), PREDICTION),
        Scored(2, Path("archive/2"), PREDICTION),
        Rejected(3, Reason.LATERAL_VIEW, "a lateral view", Path("quarantine/3")),
        Rejected(4, Reason.NOT_AN_IMAGE, "not an image", Path("quarantine/4")),
        Failed(5, Reason.PROCESSING_ERROR, "reading failed", Path("quarantine/5")),
    ]
    received = [now - timedelta(seconds=s) for s in (12, 40, 5, 5, 5)]
    metrics.observe_batch(outcomes, received, seconds=3.5, now=now)

    assert value(registry, "cxr_triage_images_processed_total", status="done") == 2
    assert value(registry, "cxr_triage_images_processed_total", status="rejected") == 2
    assert value(registry, "cxr_triage_images_processed_total", status="failed") == 1
    assert value(registry, "cxr_triage_images_rejected_total", reason="lateral_view") == 1
    assert value(registry, "cxr_triage_images_rejected_total", reason="not_an_image") == 1
    assert value(registry, "cxr_triage_images_rejected_total", reason="processing_error") == 0
    assert value(registry, "cxr_triage_turnaround_seconds_count") == 2
    assert value(registry, "cxr_triage_turnaround_seconds_sum") == pytest.approx(52)
    assert value(registry, "cxr_triage_turnaround_seconds_bucket", le="15.0") == 1
    assert value(registry, "cxr_triage_task_duration_seconds_count") == 1
    assert value(registry, "cxr_triage_task_duration_seconds_sum") == pytest.approx(3.5)
    assert value(registry, "cxr_triage_model_info", model_version="sepcnn-test-1.0") == 1


def test_outcomes_and_arrival_times_must_pair_up():
    metrics = WorkerMetrics(CollectorRegistry())
    with pytest.raises(ValueError):
        metrics.observe_batch([Scored(1, Path("archive/1"), PREDICTION)], [], seconds=1.0)


CHILD = textwrap.dedent(
    """
    from datetime import timedelta
    from types import SimpleNamespace as NS
    from db.models import utcnow
    from worker.prometheus import get_metrics
    now = utcnow()
    done = NS(status=NS(value="done"), reason=None, prediction=NS(model_version="v7"))
    rejected = NS(status=NS(value="rejected"), reason="view_position", prediction=None)
    get_metrics().observe_batch([done, rejected], [now - timedelta(seconds=3)] * 2, 1.0)
    get_metrics().observe_pacs("written")
    """
)
SERVER = textwrap.dedent(
    """
    import sys, time
    from worker.prometheus import serve
    serve(int(sys.argv[1]), address="127.0.0.1")
    print("serving", flush=True)
    time.sleep(60)
    """
)


def test_prefork_children_are_summed_on_one_endpoint(tmp_path: Path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus")}
    env["CXR_DATA_DIR"] = str(tmp_path / "data")  # the result-state gauge reads its database
    (tmp_path / "prometheus").mkdir()
    for _ in range(2):  # two worker children, each its own process
        subprocess.run([sys.executable, "-c", CHILD], env=env, cwd=REPO, check=True, timeout=60)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port)], env=env, cwd=REPO, stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == b"serving"
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    text = r.read().decode()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        server.terminate()
        server.wait(timeout=10)
    lines = set(text.splitlines())
    assert 'cxr_triage_images_processed_total{status="done"} 2.0' in lines
    assert 'cxr_triage_images_rejected_total{reason="view_position"} 2.0' in lines
    assert "cxr_triage_turnaround_seconds_count 2.0" in lines
    assert 'cxr_triage_pacs_results_total{outcome="written"} 2.0' in lines
    assert any(line.startswith('cxr_triage_model_info{model_version="v7"}') for line in lines)


HOOK = textwrap.dedent(
    """
    import time
    from worker import lifecycle
    lifecycle._serve_metrics()  # what the worker's main process runs at worker_init
    print("serving", flush=True)
    time.sleep(60)
    """
)


def listening_address(port: int) -> str:
    """The local address a TCP socket listens on for ``port``, from /proc/net/tcp."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if int(hex_port, 16) == port and state == "0A":  # LISTEN
            return socket.inet_ntoa(bytes.fromhex(address)[::-1])
    raise AssertionError(f"nothing listens on {port}")


@pytest.mark.parametrize(("setting", "expected"), [(None, "127.0.0.1"), ("0.0.0.0", "0.0.0.0")])
def test_the_worker_serves_metrics_on_loopback_unless_told(
    tmp_path: Path, setting: str | None, expected: str
):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    env.update(CXR_DATA_DIR=str(tmp_path), CXR_METRICS_PORT=str(port))
    if setting is not None:
        env["CXR_METRICS_ADDRESS"] = setting
    server = subprocess.Popen(
        [sys.executable, "-c", HOOK], env=env, cwd=REPO, stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == b"serving"
        assert listening_address(port) == expected
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_result_objects_by_state_are_read_from_the_database(sessions, tmp_path):
    from prometheus_client import generate_latest

    from db.engine import make_engine, make_session_factory
    from db.models import ResultKind, utcnow
    from db.results import WrittenObject, record_unpublishable, record_written, state_counts
    from db.worklist import Arrival, admit
    from worker.prometheus import ResultStates

    with sessions.begin() as session:
        one, _ = admit(session, Arrival("1" * 64, "a.dcm", "/in/a.dcm", "dicom"))
        two, _ = admit(session, Arrival("2" * 64, "b.dcm", "/in/b.dcm", "dicom"))
        record_written(session, one.id, [WrittenObject(ResultKind.SR, "2.25.1", "/o/a")], utcnow())
        record_unpublishable(session, two.id, "source_unreferenceable", "no UID", utcnow())

    def counts() -> dict[str, int]:
        with sessions() as session:
            return {state.value: n for state, n in state_counts(session).items()}

    registry = CollectorRegistry()
    registry.register(ResultStates(counts))
    lines = set(generate_latest(registry).decode().splitlines())
    assert 'cxr_triage_result_objects{state="pending"} 1.0' in lines
    assert 'cxr_triage_result_objects{state="failed"} 2.0' in lines
    assert 'cxr_triage_result_objects{state="stored"} 0.0' in lines

    unreachable = make_session_factory(
        make_engine(f"postgresql+psycopg://cxr@127.0.0.1:{free_port()}/cxr")
    )

    def database_down() -> dict[str, int]:  # a real connection to a closed port
        with unreachable() as session:
            return {state.value: n for state, n in state_counts(session).items()}

    down = CollectorRegistry()
    down.register(ResultStates(database_down))
    assert "cxr_triage_result_objects{" not in generate_latest(down).decode()


def test_rows_waiting_are_read_from_the_database_for_the_autoscaler(sessions):
    """``cxr_triage_rows_waiting{status}``: the backlog an HPA scales workers on
    (deploy/k8s/components/hpa-prometheus), the same on every broker."""
    from prometheus_client import generate_latest

    from db.models import utcnow
    from db.worklist import Arrival, ScoreValues, admit, claim
    from tests.support.worklist import record_scored
    from worker.prometheus import RowsWaiting, waiting_row_counts

    with sessions.begin() as session:
        ids = [
            admit(session, Arrival(f"{n}" * 64, f"{n}.png", f"/in/{n}.png"))[0].id for n in range(4)
        ]
    with sessions.begin() as session:
        claim(session, ids[0], "task", batch_size=1, claimed_by="host:1", stale_before=utcnow())
        done, _ = admit(session, Arrival("9" * 64, "9.png", "/in/9.png"))
        record_scored(session, done, ScoreValues(0.1, "normal", "routine", 2, 0.5, "v1"), "/a/9")
    registry = CollectorRegistry()
    registry.register(RowsWaiting(lambda: waiting_row_counts(sessions)))
    lines = set(generate_latest(registry).decode().splitlines())
    assert 'cxr_triage_rows_waiting{status="queued"} 3.0' in lines
    assert 'cxr_triage_rows_waiting{status="processing"} 1.0' in lines


def test_a_reset_drops_only_metric_files_and_not_twice_for_runs_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """An operator may point PROMETHEUS_MULTIPROC_DIR at a folder with other things in it;
    and the worker that ``run`` starts must not unlink files ``run``'s own counters use."""
    from worker import prometheus

    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_1.db").write_bytes(b"old")
    (folder / "notes.txt").write_text("keep me")
    monkeypatch.setenv(prometheus.MULTIPROCESS_VARIABLE, str(folder))
    monkeypatch.delenv(prometheus.RESET_BY_PARENT, raising=False)
    prometheus.reset_multiprocess_dir()
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]

    (folder / "counter_2.db").write_bytes(b"written by run's delivery counters")
    monkeypatch.setenv(prometheus.RESET_BY_PARENT, "1")
    prometheus.reset_multiprocess_dir()
    assert (folder / "counter_2.db").is_file()
