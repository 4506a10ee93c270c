"""claim leases: who holds a processing row and until when

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

A claimed row records the worker process holding it (``claimed_by``) and a lease
(``lease_expires_at``) that the worker node renews while the task runs. A node that dies
stops renewing; once the lease has expired another worker takes the row over within
seconds, instead of after the broker's visibility timeout. Both columns are nullable: rows
claimed before this revision have no lease and keep the old ``started_at`` cut-off.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("worklist") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(length=255), nullable=True))
        batch.add_column(
            sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
    op.create_index(
        "ix_worklist_status_lease_expires_at", "worklist", ["status", "lease_expires_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_worklist_status_lease_expires_at", table_name="worklist")
    with op.batch_alter_table("worklist") as batch:
        batch.drop_column("lease_expires_at")
        batch.drop_column("claimed_by")
