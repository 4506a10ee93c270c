"""result_objects table: each SR and SC tracked until the PACS has it

Revision ID: 0005
Revises: 0001
Create Date: 2026-11-29

Written from the model and read: states and kinds are VARCHAR with a CHECK constraint (as in
0001), times plain DateTime with time zone. One row per (worklist row, kind); the delivery loop
finds due rows through (state, next_attempt_at).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS = ("sr", "sc")
STATES = ("pending", "stored", "failed")
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "result_objects",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("entry_id", ID, nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                *KINDS, name="result_kind", native_enum=False, create_constraint=True, length=16
            ),
            nullable=False,
        ),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column(
            "state",
            sa.Enum(
                *STATES, name="result_state", native_enum=False, create_constraint=True, length=16
            ),
            nullable=False,
        ),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["worklist.id"],
            name=op.f("fk_result_objects_entry_id_worklist"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_result_objects")),
        sa.UniqueConstraint("entry_id", "kind", name="uq_result_objects_entry_id_kind"),
    )
    op.create_index(op.f("ix_result_objects_entry_id"), "result_objects", ["entry_id"])
    op.create_index(
        "ix_result_objects_state_next_attempt_at", "result_objects", ["state", "next_attempt_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_result_objects_state_next_attempt_at", table_name="result_objects")
    op.drop_index(op.f("ix_result_objects_entry_id"), table_name="result_objects")
    op.drop_table("result_objects")
