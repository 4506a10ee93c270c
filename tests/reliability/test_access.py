"""Scenario 8: access. Flower needs credentials; PACS-side readers get a role that can read
the worklist and write nothing; no secret is in the repository; every worklist filter is
parameterized (hostile strings are data, never SQL)."""

from __future__ import annotations

import re
import subprocess
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
import yaml
from sqlalchemy import inspect
from sqlalchemy.orm import Session, sessionmaker

from db import migrate
from db.engine import make_engine
from db.models import Status, utcnow
from db.worklist import Arrival, admit, reading_order
from tests.processes import CLI, cli_json, service_env
from tests.support.servers import PrivatePostgres

REPO = Path(__file__).resolve().parents[2]
ROLES_SQL = REPO / "db" / "sql" / "roles.sql"

HOSTILE = [
    "'; DROP TABLE worklist; --",
    '" OR 1=1 --',
    "x' OR '1'='1",
    "%",
    "_",
    "\\",
    "1; DELETE FROM worklist",
    "$$; SELECT pg_sleep(5); $$",
    "ü名前\u202e",
]


@pytest.mark.services
@pytest.mark.slow
def test_reader_role_reads_the_worklist_and_writes_nothing(
    private_postgres: PrivatePostgres,
) -> None:
    migrate.upgrade(private_postgres.url)
    engine = make_engine(private_postgres.url)
    with sessionmaker(engine).begin() as session:
        admit(session, Arrival("a" * 64, "x.dcm", "/inbox/x.dcm", patient_id="P1"))
    engine.dispose()
    admin = private_postgres.admin_url
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(ROLES_SQL.read_text())  # type: ignore[arg-type]
        # A login made as the README used to say: the group's read-only setting never
        # reached it (issue 20). Running the script again (after each upgrade) fixes it.
        connection.execute("CREATE ROLE pacs_ris LOGIN IN ROLE cxr_worklist_reader")
        connection.execute(ROLES_SQL.read_text())  # type: ignore[arg-type]
    reader = admin.replace("postgres@", "pacs_ris@")
    with psycopg.connect(reader, autocommit=True) as connection:
        setting = connection.execute("SHOW default_transaction_read_only").fetchone()
        assert setting == ("on",)
        assert connection.execute("SELECT count(*) FROM worklist").fetchone() == (1,)
        # the reading order as the device gives it (migration 0006), and the list apart
        first = connection.execute("SELECT position, tier FROM reading_list LIMIT 50").fetchall()
        assert first == [(1, "suspect")]  # queued: not yet known, read with SUSPECT
        assert connection.execute("SELECT count(*) FROM reading_list_apart").fetchone() == (0,)
        for statement in (
            "SELECT count(*) FROM accounts",  # password hashes
            "SELECT count(*) FROM audit_log",
            "INSERT INTO worklist (file_sha256, source_name, source_path, status, flags, "
            "attempts, received_at) VALUES ('b', 'y', 'y', 'queued', '', 0, now())",
            "UPDATE worklist SET status = 'done'",
            "DELETE FROM worklist",
            "TRUNCATE worklist",
            "DROP TABLE worklist",
            "DROP VIEW reading_list",
            "CREATE VIEW evil_list AS SELECT 1 AS position",
            "CREATE TABLE evil (x int)",
        ):
            with pytest.raises(psycopg.errors.Error) as caught:
                connection.execute(statement)  # type: ignore[arg-type]
            assert isinstance(
                caught.value,
                psycopg.errors.InsufficientPrivilege | psycopg.errors.ReadOnlySqlTransaction,
            ), statement
    with psycopg.connect(admin) as connection:
        assert connection.execute("SELECT count(*) FROM worklist").fetchone() == (1,)


def test_the_committed_roles_script_is_the_one_the_code_writes() -> None:
    from db.roles import roles_sql

    assert ROLES_SQL.read_text() == roles_sql(), "run: cxr-triage db roles --sql > db/sql/roles.sql"


def test_hostile_strings_through_every_worklist_filter(database_url: str, tmp_path: Path) -> None:
    engine = make_engine(database_url)
    sessions = sessionmaker(engine, class_=Session)
    with sessions.begin() as session:
        for n, value in enumerate(HOSTILE):
            admit(
                session,
                Arrival(
                    f"{n:064x}", value, f"/inbox/{n}", patient_id=value, accession_number=value[:16]
                ),
            )
    with sessions() as session:
        for n, value in enumerate(HOSTILE):
            by_patient = reading_order(session, patient_id=value)
            assert [r.file_sha256 for r in by_patient] == [f"{n:064x}"], value
            by_accession = reading_order(session, accession_number=value[:16])
            assert [r.file_sha256 for r in by_accession] == [f"{n:064x}"], value
        everything = reading_order(
            session,
            statuses=[Status.QUEUED],
            since=utcnow() - timedelta(days=1),
            until=utcnow() + timedelta(days=1),
            include_reviewed=True,
            limit=100,
        )
        assert len(everything) == len(HOSTILE)
    assert "worklist" in inspect(engine).get_table_names()
    engine.dispose()
    # The same through the CLI that PACS-side scripts call.
    env = service_env(tmp_path, database_url, None)
    for n, value in enumerate(HOSTILE):
        listed = cli_json(["worklist", "--json", "--patient", value], env)
        assert [r["file_sha256"] for r in listed] == [f"{n:064x}"], value
        listed = cli_json(["worklist", "--json", "--accession", value[:16]], env)
        assert [r["file_sha256"] for r in listed] == [f"{n:064x}"], value
    for bad in ("'; DROP TABLE worklist; --", "1 OR 1=1"):
        result = subprocess.run(
            [*CLI, "worklist", "--since", bad], env=env, capture_output=True, text=True, check=False
        )
        assert result.returncode != 0 and "DROP" not in result.stdout
    migrate.upgrade(database_url)  # still there, still at head
    assert len(cli_json(["worklist", "--json", "--limit", "100"], env)) == len(HOSTILE)


def test_flower_refuses_to_start_without_credentials(tmp_path: Path) -> None:
    env = service_env(tmp_path, f"sqlite:///{tmp_path / 'w.sqlite3'}", None)
    result = subprocess.run(
        [*CLI, "flower", "--address", "0.0.0.0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0 and "CXR_FLOWER_BASIC_AUTH" in result.stderr
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    flower_env = compose["services"]["flower"]["environment"]
    assert flower_env["CXR_FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert compose["services"]["flower"]["ports"] == ["127.0.0.1:5555:5555"]


SECRET_PATTERNS = [
    re.compile(r"[a-z+]+://[^/\s:@'\"]+:(?!\$\{)[^@\s/'\"]+@"),  # a URL with a password
    # ... or with one in its query string (libpq, SQLAlchemy and kombu accept ?password=)
    re.compile(r"(?i)[a-z+]+://\S*[?&](password|passwd|pwd|pass|sslpassword)=(?!\$\{)[^&\s'\"]+"),
    re.compile(r"(?i)(password|secret|api_key|token)\s*[:=]\s*['\"][^'\"${}<>.]{6,}['\"]"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"AKIA[0-9A-Z]{16}"),
]


@pytest.mark.parametrize(
    "text",
    [
        "CXR_DATABASE_URL=postgresql+psycopg://cxr:hunter22@db/cxr",
        "CXR_DATABASE_URL=postgresql+psycopg://cxr@db/cxr?password=hunter22",
        "url: postgresql:///cxr?host=db&sslmode=require&sslpassword=hunter22",
        "CXR_BROKER_URL=redis://redis:6379/0?password=hunter22",
    ],
)
def test_the_secret_scan_sees_a_password_anywhere_in_a_url(text: str) -> None:
    assert any(pattern.search(text) for pattern in SECRET_PATTERNS), text


def test_no_secret_is_committed() -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    found = []
    for name in tracked:
        path = REPO / name
        if name.startswith("tests/") or not path.is_file() or path.suffix in (".keras", ".png"):
            continue
        text = path.read_text(errors="ignore")
        found += [f"{name}: {m.group(0)}" for p in SECRET_PATTERNS for m in p.finditer(text)]
    assert found == []
    assert ".env" in (REPO / ".gitignore").read_text().split()
