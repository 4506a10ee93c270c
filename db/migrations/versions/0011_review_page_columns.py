"""review page: what a reader needs on the row (age, sex, view, study description), the
SUSPECT cut-off the row was scored with, and an index for the page's change check

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06

- ``patient_age_years``, ``patient_sex``, ``view_position``, ``study_description``: read from
  the header at admission (ingest/metadata.py), shown on the review page ("why this child
  first"); PHI-grade like ``patient_id``. NULL for rows admitted before, and for JPEG/PNG.
- ``suspect_threshold``: the model card's SUSPECT cut-off the row was scored with, beside
  ``threshold`` (the URGENT one), so the page can state both cut-offs of every row.
- ``ix_worklist_finished_at``: the open page asks twice a second whether the list changed
  (``web/live.py``: the newest row, the newest finish, the newest review); with this index
  the newest finish is one index probe instead of a scan.
- ``ix_worklist_urgent_finished_at``: the URGENT image to read scored last (the page's
  alert), one probe of a partial index over the URGENT images still to read.

Written by hand to match db.models; ``alembic check`` in the tests keeps them equal.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("worklist", sa.Column("patient_age_years", sa.Float(), nullable=True))
    op.add_column("worklist", sa.Column("patient_sex", sa.String(length=1), nullable=True))
    op.add_column("worklist", sa.Column("view_position", sa.String(length=16), nullable=True))
    op.add_column("worklist", sa.Column("study_description", sa.String(length=64), nullable=True))
    op.add_column("worklist", sa.Column("suspect_threshold", sa.Float(), nullable=True))
    op.create_index("ix_worklist_finished_at", "worklist", ["finished_at"])
    urgent_to_read = sa.text("reviewed_at IS NULL AND reading_tier = 0")
    op.create_index(
        "ix_worklist_urgent_finished_at",
        "worklist",
        ["finished_at", "id"],
        postgresql_where=urgent_to_read,
        sqlite_where=urgent_to_read,
    )


def downgrade() -> None:
    op.drop_index("ix_worklist_urgent_finished_at", table_name="worklist")
    op.drop_index("ix_worklist_finished_at", table_name="worklist")
    # plain ALTER TABLE on both (SQLite 3.35+ drops a column in place; a batch copy of the
    # table would trip over its generated columns and the views on it)
    for name in (
        "suspect_threshold",
        "study_description",
        "view_position",
        "patient_sex",
        "patient_age_years",
    ):
        op.execute(f"ALTER TABLE worklist DROP COLUMN {name}")
