"""review_history: every review of a row, append-only

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-29

A re-review used to overwrite the row's decision without a trace. Each review is now a row
here (who, when, decision, note); the worklist row keeps the latest for the reading order.
Triggers refuse UPDATE and DELETE on both SQLite and PostgreSQL, so the history cannot be
rewritten through the application's own connection either. Rows that were reviewed before
this migration get their one known review copied in, so no decision is lost.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REVIEW_DECISIONS = ("acknowledged", "agree", "disagree")
REFUSAL = "review_history is append-only"

POSTGRESQL_GUARD = f"""
CREATE FUNCTION review_history_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '{REFUSAL}';
END
$$;
CREATE TRIGGER review_history_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON review_history
    FOR EACH STATEMENT EXECUTE FUNCTION review_history_append_only();
"""
SQLITE_GUARDS = [
    f"""CREATE TRIGGER review_history_no_{verb.lower()} BEFORE {verb} ON review_history
    BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END"""
    for verb in ("UPDATE", "DELETE")
]


def upgrade() -> None:
    row_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "review_history",
        sa.Column("id", row_id, autoincrement=True, nullable=False),
        sa.Column("worklist_id", row_id, nullable=False),
        sa.Column(
            "decision",
            sa.Enum(
                *REVIEW_DECISIONS,
                name="decision",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("reviewed_by", sa.String(length=64), nullable=False),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["worklist_id"], ["worklist.id"], name=op.f("fk_review_history_worklist_id_worklist")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_history")),
    )
    op.create_index(op.f("ix_review_history_worklist_id"), "review_history", ["worklist_id"])
    op.execute(
        "INSERT INTO review_history (worklist_id, decision, reviewed_by, reviewed_at) "
        "SELECT id, review_decision, coalesce(reviewed_by, ''), reviewed_at FROM worklist "
        "WHERE review_decision IS NOT NULL AND reviewed_at IS NOT NULL"
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRESQL_GUARD)
    else:
        for guard in SQLITE_GUARDS:
            op.execute(guard)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER review_history_append_only ON review_history")
        op.execute("DROP FUNCTION review_history_append_only()")
    op.drop_index(op.f("ix_review_history_worklist_id"), table_name="review_history")
    op.drop_table("review_history")
