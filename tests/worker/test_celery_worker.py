"""Real Celery workers on the real Redis and PostgreSQL, driven through the CLI.

Files the model never sees (a lateral view, a CT, a truncated file, a duplicate) go through
the watcher, the broker and a prefork worker; TensorFlow is not needed here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from db.models import Status
from tests.corpus import copy_jpeg, ct_dicom, dataset_jpegs, lateral_dicom, truncated_copy
from tests.processes import (
    all_final,
    cli,
    cli_json,
    files_under,
    rows,
    running,
    service_env,
)
from tests.support import wait_until

pytestmark = [pytest.mark.services, pytest.mark.slow]


def test_worker_and_watcher_file_every_unscorable_input_once(
    tmp_path: Path, pg_url: str, redis_url: str
) -> None:
    env = service_env(tmp_path, pg_url, redis_url, CXR_MODEL_PATH=str(tmp_path / "no-model"))
    cli(["db", "upgrade"], env)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    staging = tmp_path / "staging"
    staging.mkdir()
    jpegs = dataset_jpegs(2)
    lateral_dicom(jpegs[0], staging / "lateral.dcm")
    ct_dicom(staging / "ct.dcm")
    truncated_copy(jpegs[1], staging / "truncated.jpeg", keep=0.4)
    copy_jpeg(staging / "lateral.dcm", staging / "lateral-again.dcm")  # same bytes
    logs = [tmp_path / "worker.log", tmp_path / "watch.log"]
    with (
        running(["worker", "--concurrency", "2"], env, logs[0]),
        running(["watch"], env, logs[1]),
    ):
        for name in ("lateral.dcm", "ct.dcm", "truncated.jpeg"):
            (staging / name).rename(inbox / name)
        wait_until(all_final(pg_url, 3), 120, "three final rows", logs)
        (staging / "lateral-again.dcm").rename(inbox / "lateral-again.dcm")
        wait_until(lambda: files_under(inbox) == [], 30, "an empty inbox", logs)
        status = cli_json(["status", "--json"], env)
    found = {r.source_name: (r.status, r.reason) for r in rows(pg_url)}
    assert found == {
        "lateral.dcm": (Status.REJECTED, "lateral_view"),
        "ct.dcm": (Status.REJECTED, "wrong_sop_class"),
        "truncated.jpeg": (Status.REJECTED, "truncated"),
    }
    quarantined = {p.parent.name for p in files_under(tmp_path / "quarantine")}
    assert quarantined == {"lateral_view", "wrong_sop_class", "truncated", "duplicate"}
    assert status["counts"]["rejected"] == 3 and status["counts"]["queued"] == 0
    assert status["queues"] == {"cxr.live": 0, "cxr.backfill": 0, "cxr.results": 0}
    assert status["oldest_waiting"] is None
    listed = cli_json(["worklist", "--json", "--status", "rejected"], env)
    assert len(listed) == 3
    entry_id = listed[0]["id"]
    cli(["review", str(entry_id), "--decision", "acknowledged", "--by", "dr-test"], env)
    assert len(cli_json(["worklist", "--json"], env)) == 2
    csv_lines = cli(["worklist", "--csv", "--include-reviewed"], env).stdout.splitlines()
    assert csv_lines[0].startswith("id,status,priority") and len(csv_lines) == 4
    log_text = "".join(p.read_text() for p in logs)
    for row in rows(pg_url):  # no PHI in the logs
        assert row.patient_id is None or row.patient_id not in log_text
        assert row.sop_instance_uid is None or row.sop_instance_uid not in log_text


def test_live_arrivals_are_taken_before_a_backfill(
    tmp_path: Path, pg_url: str, redis_url: str
) -> None:
    """Backfill tasks are queued first, then one live task; a worker started afterwards
    takes the live task first (Redis queue_order_strategy='priority', live listed first)."""
    from db.engine import make_engine, make_session_factory
    from ingest.watcher import Origin
    from worker.intake import Intake
    from worker.settings import Settings

    env = service_env(tmp_path, pg_url, redis_url, CXR_BATCH_SIZE="1")
    cli(["db", "upgrade"], env)
    settings = Settings(**{k[4:].lower(): v for k, v in env.items() if k.startswith("CXR_")})
    settings.inbox_dir.mkdir(parents=True)
    engine = make_engine(pg_url)
    sessions = make_session_factory(engine)
    sent: list[tuple[int, Origin]] = []
    import worker.celery_app as celery_module

    celery_module.app.conf.broker_url = redis_url
    celery_module.app.conf.broker_transport = None  # not the embedded broker's transport
    celery_module.app.conf.broker_transport_options = {
        "visibility_timeout": 1800,
        "queue_order_strategy": "priority",
    }
    from worker.tasks import enqueue

    def send(entry_ids: list[int], origin: Origin) -> None:
        sent.extend((entry_id, origin) for entry_id in entry_ids)
        enqueue(entry_ids, origin)

    intake = Intake(settings, sessions, send)
    for n in range(6):  # each with its own UIDs: six rows
        intake.admit(ct_dicom(settings.inbox_dir / f"backfill{n}.dcm"), Origin.BACKFILL)
    live = settings.inbox_dir / "live.dcm"
    lateral_dicom(dataset_jpegs(1)[0], live)
    intake.admit(live, Origin.LIVE)
    engine.dispose()
    log = tmp_path / "worker.log"
    with running(["worker", "--pool", "solo", "--concurrency", "1"], env, log):
        wait_until(all_final(pg_url, 7), 120, "seven final rows", [log])
    finished = sorted(rows(pg_url), key=lambda r: r.finished_at)  # type: ignore[arg-type, return-value]
    assert finished[0].source_name == "live.dcm", [r.source_name for r in finished]
    assert json.dumps([o.value for _, o in sent]).count("backfill") == 6


def test_each_task_names_its_batch_of_row_ids_for_flower(
    tmp_path: Path, pg_url: str, redis_url: str
) -> None:
    """Five new files, batch size 3: two messages on the live queue, whose arguments (what
    Flower shows) are the row ids [[1, 2, 3]] and [[4, 5]]; no file name, no patient data."""
    import base64

    import redis as redis_client

    from db.engine import make_engine, make_session_factory
    from ingest.watcher import Origin
    from worker.celery_app import LIVE_QUEUE
    from worker.intake import Intake
    from worker.settings import Settings

    env = service_env(tmp_path, pg_url, redis_url, CXR_BATCH_SIZE="3")
    cli(["db", "upgrade"], env)
    settings = Settings(**{k[4:].lower(): v for k, v in env.items() if k.startswith("CXR_")})
    settings.inbox_dir.mkdir(parents=True)
    engine = make_engine(pg_url)
    import worker.celery_app as celery_module

    celery_module.app.conf.broker_url = redis_url
    celery_module.app.conf.broker_transport = None  # not the embedded broker's transport
    from worker.tasks import enqueue

    files = [
        copy_jpeg(j, settings.inbox_dir / f"person{n}.jpeg") for n, j in enumerate(dataset_jpegs(5))
    ]
    Intake(settings, make_session_factory(engine), enqueue).admit_many(
        [(path, Origin.LIVE) for path in files]
    )
    engine.dispose()
    ids = sorted(row.id for row in rows(pg_url))
    broker = redis_client.Redis.from_url(redis_url)
    messages = [json.loads(raw) for raw in reversed(broker.lrange(LIVE_QUEUE, 0, -1))]
    assert [m["headers"]["task"] for m in messages] == ["cxr.triage", "cxr.triage"]
    assert [m["headers"]["argsrepr"] for m in messages] == [
        repr((ids[:3],)),
        repr((ids[3:],)),
    ]
    bodies = [json.loads(base64.b64decode(m["body"])) for m in messages]
    assert [body[0] for body in bodies] == [[ids[:3]], [ids[3:]]]
    assert not any("person" in json.dumps(m) for m in messages)
