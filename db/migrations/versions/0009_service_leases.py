"""service_leases table: one active watcher per share, standbys take over when it dies

Revision ID: 0009
Revises: 0005
Create Date: 2026-12-06

Written by hand to match db.models.ServiceLease; ``alembic check`` in the tests keeps them
equal. A lease row per service name (``watcher``): the holder renews it, a standby takes it
once expired (db/leadership.py).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "service_leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=255), nullable=False),
        sa.Column(
            "term", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_service_leases"),
    )


def downgrade() -> None:
    op.drop_table("service_leases")
