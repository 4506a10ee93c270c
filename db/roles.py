"""PostgreSQL roles: each service logs in with only the privileges its statements need.

Every service connected as the database's superuser (issue 20): a flaw in the web page was a
flaw with the right to drop the worklist. Here the schema's owner (the login that runs
``cxr-triage db upgrade``) owns the tables and is used for migrations and administration only
(``db upgrade``, ``user``, ``review``, ``pacs-send``); each service gets a group role (NOLOGIN)
with the grants worked out from its statements, and each login is a member of one group:

=================== ==========================================================================
group               what its statements do
=================== ==========================================================================
cxr_watcher         admits files: SELECT, INSERT, UPDATE on ``worklist`` (a failed row's
                    instance arriving again takes the row over); ``db check``
cxr_worker          claims, scores and files rows: SELECT, UPDATE on ``worklist`` (no INSERT:
                    rows come from the watcher); writes SR/SC rows (``result_objects``) and the
                    drift counts (upsert)
cxr_deliver         sends SR/SC and the RIS messages (HL7, FHIR: rows of the same table):
                    SELECT, UPDATE on ``result_objects``; SELECT on ``worklist``; ``db check``
cxr_web             reads the worklist, records reviews: UPDATE of the three ``review_*``
                    columns only, INSERT into ``review_history``; checks logins: SELECT on
                    ``accounts`` and UPDATE of its four lock columns only (never a password
                    hash nor a role); INSERT and SELECT on ``audit_log``
cxr_worklist_reader PACS/RIS-side readers: SELECT on the worklist tables, nothing on
                    ``accounts`` or ``audit_log``; every login in it is also set read-only
=================== ==========================================================================

Nobody but the owner may UPDATE or DELETE ``review_history`` or ``audit_log`` (and their
triggers refuse even the owner), TRUNCATE, or create objects: ``PUBLIC`` loses CREATE on
schema ``public`` and every right on the database but through these groups.

Role settings are not inherited by member logins: ``ALTER ROLE cxr_worklist_reader SET
default_transaction_read_only`` left a member's sessions writable (issue 20). The privileges
are what refuse writes; :func:`login_sql` and :func:`apply` also set the read-only default on
each reader login itself, those that exist included.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import Connection, text

READER_GROUP = "cxr_worklist_reader"
LOGIN_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@dataclass(frozen=True)
class Grant:
    privileges: str  # "SELECT, INSERT"
    table: str
    columns: tuple[str, ...] = ()

    def sql(self, group: str) -> str:
        if self.columns:
            columns = ", ".join(self.columns)
            return f"GRANT {self.privileges} ({columns}) ON {self.table} TO {group};"
        return f"GRANT {self.privileges} ON {self.table} TO {group};"


@dataclass(frozen=True)
class ServiceRole:
    """One group role: its grants and the sequences its INSERTs draw ids from."""

    group: str
    grants: tuple[Grant, ...]
    sequences: tuple[str, ...] = ()
    read_only: bool = False


WORKLIST_TABLES = ("worklist", "review_history", "result_objects", "drift_count")
#: The reading order as views (migration 0006): what PACS/RIS-side tools read.
READING_VIEWS = ("reading_list", "reading_list_apart")
#: Relations the roles are granted on; ``db roles`` revokes everything else on these first.
TABLES = (
    *WORKLIST_TABLES,
    *READING_VIEWS,
    "service_leases",
    "accounts",
    "audit_log",
    "alembic_version",
)
SEQUENCES = ("worklist_id_seq", "review_history_id_seq", "result_objects_id_seq")
ACCOUNT_SEQUENCES = ("accounts_id_seq", "audit_log_id_seq")
SCHEMA_CHECK = Grant("SELECT", "alembic_version")  # `cxr-triage db check`, the health check

ROLES: dict[str, ServiceRole] = {
    "watcher": ServiceRole(
        "cxr_watcher",
        (
            Grant("SELECT, INSERT, UPDATE", "worklist"),
            Grant("SELECT, INSERT, UPDATE", "service_leases"),  # one active watcher a share
            SCHEMA_CHECK,
        ),
        ("worklist_id_seq",),
    ),
    "worker": ServiceRole(
        "cxr_worker",
        (
            Grant("SELECT, UPDATE", "worklist"),
            Grant("SELECT, INSERT, UPDATE", "result_objects"),
            Grant("SELECT, INSERT, UPDATE", "drift_count"),
            SCHEMA_CHECK,
        ),
        ("result_objects_id_seq",),
    ),
    "deliver": ServiceRole(
        "cxr_deliver",
        (
            Grant("SELECT", "worklist"),
            Grant("SELECT, UPDATE", "result_objects"),
            SCHEMA_CHECK,
        ),
    ),
    "web": ServiceRole(
        "cxr_web",
        (
            Grant("SELECT", "worklist"),
            *(Grant("SELECT", view) for view in READING_VIEWS),
            Grant("UPDATE", "worklist", ("review_decision", "reviewed_by", "reviewed_at")),
            Grant("SELECT, INSERT", "review_history"),
            Grant("SELECT", "result_objects"),
            Grant("SELECT", "drift_count"),
            Grant("SELECT", "accounts"),
            Grant(
                "UPDATE",
                "accounts",
                ("failed_logins", "last_failure_at", "locked_until", "last_login_at"),
            ),
            Grant("SELECT, INSERT", "audit_log"),
            SCHEMA_CHECK,
        ),
        ("review_history_id_seq", "audit_log_id_seq"),
    ),
    "reader": ServiceRole(
        READER_GROUP,
        (
            *(Grant("SELECT", table) for table in (*WORKLIST_TABLES, *READING_VIEWS)),
            Grant("SELECT", "service_leases"),  # `cxr-triage status` names the watcher
            SCHEMA_CHECK,
        ),
        read_only=True,
    ),
}


def roles_sql() -> str:
    """The idempotent script that creates the groups and sets exactly their grants (run as
    the tables' owner, after ``cxr-triage db upgrade``; again after each upgrade)."""
    groups = [role.group for role in ROLES.values()]
    lines = [
        "-- cxr-triage: least-privilege roles (db/roles.py writes this; do not edit by hand).",
        "-- Run as the owner of the tables (the login of `cxr-triage db upgrade`), after it:",
        "--     psql ... -v ON_ERROR_STOP=1 -f db/sql/roles.sql",
        "-- or `cxr-triage db roles`. Then give each service its own login in its group:",
        "--     cxr-triage db create-login NAME --role watcher|worker|deliver|web|reader",
        "-- Idempotent.",
        "DO $$",
        "BEGIN",
        *(
            f"    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{group}') THEN\n"
            f"        CREATE ROLE {group} NOLOGIN;\n"
            "    END IF;"
            for group in groups
        ),
        "END",
        "$$;",
        "DO $$ BEGIN",
        "    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());",
        *(
            f"    EXECUTE format('GRANT CONNECT ON DATABASE %I TO {group}', current_database());"
            for group in groups
        ),
        "END $$;",
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC;",
        f"REVOKE ALL ON {', '.join(TABLES)} FROM PUBLIC, {', '.join(groups)};",
        f"REVOKE ALL ON SEQUENCE {', '.join(SEQUENCES + ACCOUNT_SEQUENCES)} "
        f"FROM PUBLIC, {', '.join(groups)};",
        # The old worklist_reader.sql handed every future table to readers by default.
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM {READER_GROUP};",
    ]
    for role in ROLES.values():
        lines.append(f"-- {role.group}")
        lines.append(f"GRANT USAGE ON SCHEMA public TO {role.group};")
        lines += [grant.sql(role.group) for grant in role.grants]
        if role.sequences:
            lines.append(f"GRANT USAGE ON SEQUENCE {', '.join(role.sequences)} TO {role.group};")
        if role.read_only:
            lines.append(f"ALTER ROLE {role.group} SET default_transaction_read_only = on;")
    lines += [
        "-- Settings of a group do not reach its members: each reader login is read-only itself.",
        "DO $$",
        "DECLARE member name;",
        "BEGIN",
        "    FOR member IN SELECT m.rolname FROM pg_auth_members a",
        "        JOIN pg_roles g ON g.oid = a.roleid JOIN pg_roles m ON m.oid = a.member",
        f"        WHERE g.rolname = '{READER_GROUP}' AND m.rolcanlogin",
        "    LOOP",
        "        EXECUTE format('ALTER ROLE %I SET default_transaction_read_only = on', member);",
        "    END LOOP;",
        "END",
        "$$;",
    ]
    return "\n".join(lines) + "\n"


def login_statements(login: str, service: str) -> list[tuple[str, str]]:
    """(statement, what it does) to create or update ``login`` as a member of ``service``'s
    group only; the password is set separately (:func:`set_password`)."""
    if not LOGIN_NAME.fullmatch(login):
        raise ValueError("a login name is 1-63 lower-case letters, digits or _")
    if service not in ROLES:
        raise ValueError(f"unknown role {service!r}: one of {', '.join(ROLES)}")
    role = ROLES[service]
    others = [r.group for r in ROLES.values() if r.group != role.group]
    statements = [
        (
            f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{login}') THEN "
            f"CREATE ROLE {login} LOGIN; END IF; END $$",
            "create",
        ),
        # INHERIT: the member uses its group's grants without SET ROLE; nothing more.
        (
            f"ALTER ROLE {login} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
            "NOBYPASSRLS INHERIT",
            "attributes",
        ),
        (f"GRANT {role.group} TO {login}", "membership"),
        *((f"REVOKE {other} FROM {login}", "no other group") for other in others),
        (
            f"ALTER ROLE {login} SET default_transaction_read_only = "
            f"{'on' if role.read_only else 'off'}",
            "read-only" if role.read_only else "read-write",
        ),
    ]
    return statements


def apply(connection: Connection) -> None:
    """Run :func:`roles_sql` on ``connection`` (the owner's, in its transaction)."""
    _script(connection, roles_sql())


def create_login(connection: Connection, login: str, service: str, password: str) -> None:
    """Create or update ``login`` in ``service``'s group only, with ``password``."""
    for statement, _ in login_statements(login, service):
        _script(connection, statement)
    set_password(connection, login, password)


def set_password(connection: Connection, login: str, password: str) -> None:
    """Set the login's password as a SCRAM-SHA-256 verifier computed here, by libpq, as
    ``psql``'s ``\\password`` does: the password itself never reaches the server, so no
    statement log or ``pg_stat_activity`` can show it."""
    if not LOGIN_NAME.fullmatch(login):
        raise ValueError("a login name is 1-63 lower-case letters, digits or _")
    driver = connection.connection.driver_connection
    verifier = driver.pgconn.encrypt_password(  # type: ignore[union-attr]
        password.encode(), login.encode(), b"scram-sha-256"
    )
    literal = connection.execute(text("SELECT quote_literal(:v)"), {"v": verifier.decode()})
    _script(connection, f"ALTER ROLE {login} PASSWORD {literal.scalar_one()}")


def _script(connection: Connection, sql: str) -> None:
    """Run SQL text as it is (no parameter parsing: ``%`` in ``format()`` stays ``%``)."""
    cursor = connection.connection.cursor()
    try:
        cursor.execute(sql)
    finally:
        cursor.close()
