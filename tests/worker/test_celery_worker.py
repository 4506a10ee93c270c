"""Real Celery workers on the real Redis or RabbitMQ and PostgreSQL, driven through the CLI.

Files the model never sees (a lateral view, a CT, a truncated file, a duplicate) go through
the watcher, the broker and a prefork worker; TensorFlow is not needed here. Every test runs
on both brokers: Redis (a database of its own) and RabbitMQ (a virtual host of its own,
the worker's quorum queues).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
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
from tests.support.brokers import peek_tasks
from tests.support.rabbitmq import rabbitmq_vhost

pytestmark = [pytest.mark.services, pytest.mark.slow]


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """An empty broker: a Redis database, or a RabbitMQ virtual host deleted afterwards."""
    if request.param == "redis":
        yield request.getfixturevalue("redis_url")
        return
    with rabbitmq_vhost() as url:
        yield url


def _use_broker(url: str) -> None:
    """Point this process's Celery app at ``url`` as the worker configures it."""
    import worker.celery_app as celery_module
    from worker.settings import Settings

    app = celery_module.app
    config = celery_module.celery_config(Settings(broker_url=url))
    app.conf.update(config)
    # Celery builds its queues, router and producer pool once: built again on this config
    # (an earlier test's router would declare Redis-style classic queues on RabbitMQ). The
    # connection pools are kombu's, per URL, and stay open for a later test on that URL.
    app._pool = None
    app.__dict__.pop("amqp", None)


def test_worker_and_watcher_file_every_unscorable_input_once(
    tmp_path: Path, pg_url: str, broker_url: str
) -> None:
    env = service_env(tmp_path, pg_url, broker_url, CXR_MODEL_PATH=str(tmp_path / "no-model"))
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
    cli(["user", "add", "dr-test", "--role", "reviewer"], env, input="a long test password\n")
    cli(["review", str(entry_id), "--decision", "acknowledged", "--by", "dr-test"], env)
    assert len(cli_json(["worklist", "--json"], env)) == 2
    csv_lines = cli(["worklist", "--csv", "--include-reviewed"], env).stdout.splitlines()
    assert csv_lines[0].startswith("id,status,priority") and len(csv_lines) == 4
    log_text = "".join(p.read_text() for p in logs)
    for row in rows(pg_url):  # no PHI in the logs
        assert row.patient_id is None or row.patient_id not in log_text
        assert row.sop_instance_uid is None or row.sop_instance_uid not in log_text


def test_live_arrivals_are_taken_before_a_backfill(
    tmp_path: Path, pg_url: str, broker_url: str
) -> None:
    """Backfill tasks are queued first, then one live task; a worker started afterwards
    takes the live task first (Redis: queue_order_strategy='priority', live listed first;
    RabbitMQ: each queue's consumer has its own prefetch, the live one subscribed first)."""
    from db.engine import make_engine, make_session_factory
    from ingest.watcher import Origin
    from worker.intake import Intake
    from worker.settings import Settings

    env = service_env(tmp_path, pg_url, broker_url, CXR_BATCH_SIZE="1")
    cli(["db", "upgrade"], env)
    settings = Settings(**{k[4:].lower(): v for k, v in env.items() if k.startswith("CXR_")})
    settings.inbox.mkdir(parents=True)
    engine = make_engine(pg_url)
    sessions = make_session_factory(engine)
    sent: list[tuple[int, Origin]] = []
    _use_broker(broker_url)
    from worker.tasks import enqueue

    def send(entry_ids: list[int], origin: Origin) -> None:
        sent.extend((entry_id, origin) for entry_id in entry_ids)
        enqueue(entry_ids, origin)

    intake = Intake(settings, sessions, send)
    for n in range(6):  # each with its own UIDs: six rows
        intake.admit(ct_dicom(settings.inbox / f"backfill{n}.dcm"), Origin.BACKFILL)
    live = settings.inbox / "live.dcm"
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
    tmp_path: Path, pg_url: str, broker_url: str
) -> None:
    """Five new files, batch size 3: two messages on the live queue, whose arguments (what
    Flower shows) are the row ids [[1, 2, 3]] and [[4, 5]]; no file name, no patient data."""
    from db.engine import make_engine, make_session_factory
    from ingest.watcher import Origin
    from worker.celery_app import LIVE_QUEUE
    from worker.intake import Intake
    from worker.settings import Settings

    env = service_env(tmp_path, pg_url, broker_url, CXR_BATCH_SIZE="3")
    cli(["db", "upgrade"], env)
    settings = Settings(**{k[4:].lower(): v for k, v in env.items() if k.startswith("CXR_")})
    settings.inbox.mkdir(parents=True)
    engine = make_engine(pg_url)
    _use_broker(broker_url)
    from worker.tasks import enqueue

    files = [
        copy_jpeg(j, settings.inbox / f"person{n}.jpeg") for n, j in enumerate(dataset_jpegs(5))
    ]
    Intake(settings, make_session_factory(engine), enqueue).admit_many(
        [(path, Origin.LIVE) for path in files]
    )
    engine.dispose()
    ids = sorted(row.id for row in rows(pg_url))
    messages = peek_tasks(broker_url, LIVE_QUEUE)
    assert [headers["task"] for headers, _ in messages] == ["cxr.triage", "cxr.triage"]
    assert [headers["argsrepr"] for headers, _ in messages] == [
        repr((ids[:3],)),
        repr((ids[3:],)),
    ]
    assert [args for _, args in messages] == [ids[:3], ids[3:]]
    assert not any("person" in json.dumps([h, a], default=str) for h, a in messages)
