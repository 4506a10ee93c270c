"""drift_count table: per-day histograms of scores and content-check distances

Revision ID: 0004
Revises: 0001
Create Date: 2026-11-29

Written by hand to match db.models.DriftCount; ``alembic check`` in the tests keeps them equal.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "drift_count",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("measure", sa.String(length=16), nullable=False),
        sa.Column("bin", sa.SmallInteger(), nullable=False),
        sa.Column(
            "count", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.PrimaryKeyConstraint("day", "model_version", "measure", "bin", name="pk_drift_count"),
    )


def downgrade() -> None:
    op.drop_table("drift_count")
