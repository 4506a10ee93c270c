"""result_objects: a deliverer's claim token and holder, and the start of the retry schedule

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-06

A delivery loop claims a batch with a token of its own and a short lease in
``next_attempt_at`` that it renews while the batch is in flight: an object held by a dead
deliverer is due again within a minute, and a deliverer that lost its claim can no longer
record an outcome over the new holder's (``claim_token``). ``claimed_by`` (host:pid) tells an
operator who holds an object. ``schedule_started_at`` is when the object's current delivery
schedule began (written, or re-sent by an operator): temporary failures are retried until
``CXR_RESULTS_GIVE_UP_AFTER_H`` after it. Pending rows of an older revision start their
schedule at their last update.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("result_objects") as batch:
        batch.add_column(sa.Column("claim_token", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("claimed_by", sa.String(length=255), nullable=True))
        batch.add_column(
            sa.Column("schedule_started_at", sa.DateTime(timezone=True), nullable=True)
        )
    op.execute(
        "UPDATE result_objects SET schedule_started_at = updated_at WHERE state = 'pending'"
    )


def downgrade() -> None:
    with op.batch_alter_table("result_objects") as batch:
        batch.drop_column("schedule_started_at")
        batch.drop_column("claimed_by")
        batch.drop_column("claim_token")
