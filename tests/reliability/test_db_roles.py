"""Least privilege in the database (issue 20, part 6), on a real PostgreSQL with the roles.

Every service connected as the superuser, and a member of ``cxr_worklist_reader`` had
``default_transaction_read_only = off``. Here ``cxr-triage db upgrade --roles`` (compose's
``migrate`` service) sets the groups and the service logins, and the real services run
with nothing but their own login: a watcher and a Celery worker score a DICOM, file a
truncated one and a duplicate; the deliverer stores the SR and SC on a real Storage SCP; the
review page logs people in, counts a failed login and records a review; a PACS-side reader
runs ``cxr-triage worklist``. Then each login tries what is not its job, and is refused.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from db.engine import make_engine, make_session_factory
from db.models import ResultObject, ResultState, Status
from tests.corpus import cr_dicom, dataset_jpegs, truncated_copy
from tests.pacs.scp import SCP_AE_TITLE, storage_scp
from tests.processes import all_final, cli, cli_json, running
from tests.reliability.stack import Stack
from tests.support import wait_until
from tests.support.servers import PrivatePostgres, PrivateRedis
from tests.web.test_pages import csrf
from web.app import create_app
from web.config import WebConfig

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.tf]

PASSWORDS = {
    "CXR_DB_WATCHER_PASSWORD": "watcher-secret-0123456789",
    "CXR_DB_WORKER_PASSWORD": "worker-secret-0123456789",
    "CXR_DB_DELIVER_PASSWORD": "deliver-secret-0123456789",
    "CXR_DB_WEB_PASSWORD": "web-secret-0123456789",
}
ACCOUNT_PASSWORD = "a long enough passphrase"

EVERYONE = ("watcher", "worker", "deliver", "web", "pacs_ris")
#: (statement, logins that must be refused it). The owner may do all of it.
NOT_THEIR_JOB = [
    ("SELECT count(*) FROM accounts", ("watcher", "worker", "deliver", "pacs_ris")),
    ("SELECT count(*) FROM audit_log", ("watcher", "worker", "deliver", "pacs_ris")),
    (
        "INSERT INTO worklist (file_sha256, source_name, source_path, status, flags, attempts,"
        " received_at) VALUES ('b', 'y', 'y', 'queued', '', 0, now())",
        ("worker", "deliver", "web", "pacs_ris"),
    ),
    ("UPDATE worklist SET status = 'done'", ("deliver", "web", "pacs_ris")),
    ("UPDATE worklist SET reviewed_by = 'x'", ("deliver", "pacs_ris")),
    ("DELETE FROM worklist", EVERYONE),
    ("TRUNCATE worklist CASCADE", EVERYONE),
    ("DROP TABLE drift_count", EVERYONE),
    ("CREATE TABLE evil (x int)", EVERYONE),
    ("CREATE TEMP TABLE evil (x int)", EVERYONE),
    ("UPDATE result_objects SET state = 'stored'", ("watcher", "web", "pacs_ris")),
    ("DELETE FROM result_objects", EVERYONE),
    (
        "INSERT INTO review_history (worklist_id, decision, reviewed_by, reviewed_at)"
        " VALUES (1, 'agree', 'x', now())",
        ("watcher", "worker", "deliver", "pacs_ris"),
    ),
    ("UPDATE review_history SET note = 'rewritten'", EVERYONE),
    ("UPDATE accounts SET role = 'admin'", EVERYONE),
    ("UPDATE accounts SET password_hash = 'x'", EVERYONE),
    (
        "INSERT INTO accounts (name, role, disabled, created_at, failed_logins)"
        " VALUES ('evil', 'admin', false, now(), 0)",
        EVERYONE,
    ),
    ("DELETE FROM audit_log", EVERYONE),
    ("UPDATE alembic_version SET version_num = '0001'", EVERYONE),
    ("ALTER ROLE CURRENT_USER SUPERUSER", EVERYONE),
]
REFUSED = (psycopg.errors.InsufficientPrivilege, psycopg.errors.ReadOnlySqlTransaction)


def login_url(server: PrivatePostgres, login: str, driver: str = "postgresql+psycopg") -> str:
    return f"{driver}://{login}:pw@127.0.0.1:{server.port}/cxr"


def test_each_service_does_its_job_with_only_its_grants_and_nothing_else(
    tmp_path: Path,
    private_postgres: PrivatePostgres,
    private_redis: PrivateRedis,
    model_dir: Path,
) -> None:
    with psycopg.connect(private_postgres.admin_url, autocommit=True) as connection:
        connection.execute("CREATE DATABASE cxr")
    owner = login_url(private_postgres, "postgres")
    stack = Stack(tmp_path, owner, private_redis.url, model_dir, **PASSWORDS)
    cli(["db", "upgrade", "--roles"], stack.env)
    cli(["db", "upgrade", "--roles"], stack.env)  # again: idempotent
    cli(["db", "create-login", "pacs_ris", "--role", "reader"], stack.env, input="r" * 20 + "\n")
    for name, role in (("dr.mira", "reviewer"), ("ciso", "admin")):
        cli(["user", "add", name, "--role", role], stack.env, input=ACCOUNT_PASSWORD + "\n")

    # -- the watcher and the worker, each with its own login --------------------------------
    as_login = {name: {**stack.env, "CXR_DATABASE_URL": login_url(private_postgres, name)}
                for name in ("watcher", "worker", "deliver", "pacs_ris")}  # fmt: skip
    for name in PASSWORDS:
        for env in as_login.values():
            env.pop(name, None)  # a service never holds another's password
    jpegs = dataset_jpegs(2)
    scored = cr_dicom(jpegs[0], tmp_path / "scored.dcm")
    stack.drop(scored)
    stack.drop(truncated_copy(cr_dicom(jpegs[1], tmp_path / "t.dcm"), tmp_path / "trunc.dcm"))
    stack.env = as_login["worker"]
    duplicates = stack.quarantine / "duplicate"
    with stack.worker(), running(["watch"], as_login["watcher"], stack.log("watch")):
        wait_until(all_final(owner, 2), 240, "two rows final", stack.logs)
        # the scored film's SR and SC, and a "not analysed" SR for the truncated CR chest film
        wait_until(lambda: len(_objects(owner)) == 3, 120, "SR, SC and SR written", stack.logs)
        stack.drop(scored, "copy.dcm")
        wait_until(lambda: list(duplicates.glob("*.dcm")), 60, "the duplicate", stack.logs)
    assert {r.source_name: r.status for r in stack.rows()} == {
        "scored.dcm": Status.DONE,
        "trunc.dcm": Status.REJECTED,
    }
    logs = "".join(p.read_text() for p in stack.logs)
    assert "InsufficientPrivilege" not in logs and "permission denied" not in logs
    for name in ("watcher", "deliver"):  # their health check
        cli(["db", "check"], as_login[name])

    # -- the deliverer ------------------------------------------------------------------------
    with storage_scp() as scp:
        deliver_env = {
            **as_login["deliver"],
            "CXR_PACS_HOST": "127.0.0.1",
            "CXR_PACS_PORT": str(scp.port),
            "CXR_PACS_AE_TITLE": SCP_AE_TITLE,
        }
        with running(["deliver"], deliver_env, stack.log("deliver")):
            stored = [ResultState.STORED] * 3
            wait_until(lambda: _objects(owner) == stored, 120, "results stored", stack.logs)
        assert len(scp.received) == 3

    # -- the review page ------------------------------------------------------------------------
    row_id = next(r.id for r in stack.rows() if r.status == Status.DONE)
    config = WebConfig(login_url(private_postgres, "web"), stack.archive, tmp_path / "overlays")
    with TestClient(create_app(config)) as page:
        wrong = {"username": "dr.mira", "password": "wrong password"}
        assert page.post("/login", data=wrong).status_code == 401  # the lock columns
        right = {"username": "dr.mira", "password": ACCOUNT_PASSWORD}
        assert page.post("/login", data=right, follow_redirects=False).status_code == 303
        token = csrf(page.get(f"/worklist/{row_id}").text)
        reviewed = page.post(
            f"/worklist/{row_id}/review",
            data={"decision": "agree", "note": "consolidation", "csrf_token": token},
            follow_redirects=False,
        )
        assert reviewed.status_code == 303
        assert page.post("/logout", data={"csrf_token": token}).status_code == 200
        audit = page.get("/api/audit", auth=("ciso", ACCOUNT_PASSWORD))
        assert audit.status_code == 200
    assert [(e["event"], e["actor"]) for e in reversed(audit.json())][-5:] == [
        ("login_failed", "dr.mira"),
        ("login", "dr.mira"),
        ("review", "dr.mira"),
        ("logout", "dr.mira"),
        ("login", "ciso"),  # its Basic login to read the trail
    ]

    # -- a PACS-side reader ------------------------------------------------------------------
    listed = cli_json(["worklist", "--json", "--include-reviewed"], as_login["pacs_ris"])
    assert {r["source_name"] for r in listed} == {"scored.dcm", "trunc.dcm"}
    assert cli_json(["status", "--json"], as_login["pacs_ris"])["counts"]["done"] == 1

    # -- and nothing else ----------------------------------------------------------------------
    for login in EVERYONE:
        url = login_url(private_postgres, login, "postgresql")
        with psycopg.connect(url, autocommit=True) as connection:
            read_only = connection.execute("SHOW default_transaction_read_only").fetchone()
            assert read_only == ("on" if login == "pacs_ris" else "off",), login
            if login == "pacs_ris":  # a session may switch the setting off: privileges hold
                connection.execute("SET default_transaction_read_only = off")
            for statement, refused_to in NOT_THEIR_JOB:
                if login not in refused_to:
                    continue
                with pytest.raises(psycopg.Error) as caught:
                    connection.execute(statement)  # type: ignore[arg-type]
                assert isinstance(caught.value, REFUSED), (login, statement, caught.value)


def _objects(url: str) -> list[ResultState]:
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            found = session.scalars(select(ResultObject).order_by(ResultObject.id))
            return [ResultState(o.state) for o in found]
    finally:
        engine.dispose()
