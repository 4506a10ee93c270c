"""accounts and audit_log: a person behind every login and every review

Revision ID: 0008
Revises: 0005
Create Date: 2026-12-02

One shared reader account came from the environment, and every review was recorded under
its name. ``accounts`` holds one row per person (argon2id hash, role, disabled flag and the
failed-login lock); ``audit_log`` records logins (accepted and refused), logouts, reviews and
account changes. Like ``review_history``, the audit log is append-only: triggers refuse
UPDATE, DELETE (and TRUNCATE on PostgreSQL) through any login, the application's own
included.

On PostgreSQL, a database that ran the old ``worklist_reader.sql`` gave the reading role
SELECT on every future table by default privileges: password hashes and the audit trail are
not for PACS-side readers, so those grants are taken back here (``cxr-triage db roles`` sets
the per-table grants).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLES = ("reader", "reviewer", "admin")
EVENTS = (
    "login",
    "login_failed",
    "login_locked",
    "logout",
    "review",
    "account_added",
    "password_set",
    "role_set",
    "account_disabled",
    "account_enabled",
    "account_unlocked",
)
REFUSAL = "audit_log is append-only"
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

POSTGRESQL_GUARD = f"""
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '{REFUSAL}';
END
$$;
CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
"""
SQLITE_GUARDS = [
    f"""CREATE TRIGGER audit_log_no_{verb.lower()} BEFORE {verb} ON audit_log
    BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END"""
    for verb in ("UPDATE", "DELETE")
]
# The old reader script's default privileges would hand these tables to PACS-side readers.
POSTGRESQL_KEEP_FROM_READERS = """
DO $$
BEGIN
    REVOKE ALL ON accounts, audit_log FROM PUBLIC;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'cxr_worklist_reader') THEN
        REVOKE ALL ON accounts, audit_log FROM cxr_worklist_reader;
        ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE SELECT ON TABLES FROM cxr_worklist_reader;
    END IF;
END
$$;
"""


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column(
            "role",
            sa.Enum(*ROLES, name="role", native_enum=False, create_constraint=True, length=16),
            nullable=False,
        ),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("password_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("name", name=op.f("uq_accounts_name")),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "event",
            sa.Enum(*EVENTS, name="event", native_enum=False, create_constraint=True, length=16),
            nullable=False,
        ),
        sa.Column("account_id", ID, nullable=True),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("via", sa.String(length=16), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=True),
        sa.Column("worklist_id", ID, nullable=True),
        sa.Column("detail", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_audit_log_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_account_id"), "audit_log", ["account_id"])
    op.create_index(op.f("ix_audit_log_at"), "audit_log", ["at"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRESQL_GUARD)
        op.execute(POSTGRESQL_KEEP_FROM_READERS)
    else:
        for guard in SQLITE_GUARDS:
            op.execute(guard)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION audit_log_append_only()")
    op.drop_index(op.f("ix_audit_log_at"), table_name="audit_log")
    op.drop_index(op.f("ix_audit_log_account_id"), table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("accounts")
