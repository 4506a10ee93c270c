"""reading_list: the reading order as generated columns, an index and two views

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30

The reading-order rule (db/reading.py) in the database, so that a PACS/RIS-side tool gets the
order the CLI, the API and the page give without re-implementing it:

- ``reading_tier`` and ``study_key``: generated columns (db/reading_rule.py), STORED on
  PostgreSQL, virtual on SQLite (which cannot add a stored column to a table);
- ``ix_worklist_reading_order`` now walks (reading_tier, received_at, id) over the images still
  to read, so a page of the list stops after its entries; ``ix_worklist_study_key`` finds a
  study's other images; ``ix_worklist_reading_apart`` serves the list apart;
- views ``reading_list`` (one row per entry still to read, ``position`` 1 first) and
  ``reading_list_apart`` (entries that are not the device's to read).

The SQL below is db/reading.py's expressions compiled (the same text on both dialects);
tests/db/test_reading.py fails if the code and this migration drift apart.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

READING_TIER = (
    "CASE WHEN (status = 'done') THEN CASE WHEN (priority_rank = 0) THEN 0 "
    "WHEN (priority_rank = 2) THEN 2 ELSE 1 END "
    "WHEN (status IN ('queued', 'processing')) THEN 1 "
    "WHEN (reason IN ('dx_for_processing', 'lateral_view', 'non_frontal_view', 'not_chest', "
    "'wrong_modality', 'wrong_sop_class')) THEN NULL ELSE 1 END"
)
STUDY_KEY = (
    "CASE WHEN (study_instance_uid != '') THEN 'uid:' || study_instance_uid "
    "WHEN (accession_number != '') THEN 'acc:' || accession_number ELSE NULL END"
)
STUDY_KEY_LENGTH = 68

READING_LIST = """
    SELECT row_number() OVER (ORDER BY worklist.reading_tier, worklist.received_at,
        worklist.id) AS position,
      CASE WHEN (worklist.reading_tier = 0) THEN 'urgent' WHEN (worklist.reading_tier = 1)
          THEN 'suspect' WHEN (worklist.reading_tier = 2) THEN 'routine' END AS tier,
      worklist.id AS entry_id,
      worklist.study_key,
      worklist.patient_id,
      worklist.accession_number,
      worklist.study_instance_uid,
      worklist.sop_instance_uid,
      worklist.status,
      worklist.priority,
      worklist.probability,
      worklist.label,
      worklist.reason,
      worklist.flags,
      worklist.model_version,
      worklist.received_at,
      CASE WHEN (worklist.study_key IS NULL) THEN 1 ELSE (SELECT count(*) AS count_1
        FROM worklist AS member
        WHERE member.study_key = worklist.study_key
        AND coalesce(member.patient_id, '') = coalesce(worklist.patient_id, '')
        AND member.reviewed_at IS NULL) END AS images,
      EXISTS (SELECT other.id
        FROM worklist AS other
        WHERE other.study_key = worklist.study_key
        AND coalesce(other.patient_id, '') != coalesce(worklist.patient_id, '')) AS
            identity_conflict
    FROM worklist
    WHERE worklist.reading_tier IS NOT NULL
    AND worklist.reviewed_at IS NULL
    AND NOT (EXISTS (SELECT ahead.id
            FROM worklist AS ahead
            WHERE ahead.reading_tier IS NOT NULL
            AND ahead.study_key = worklist.study_key
            AND coalesce(ahead.patient_id, '') = coalesce(worklist.patient_id, '')
            AND (ahead.reading_tier, ahead.received_at, ahead.id) <
                (worklist.reading_tier, worklist.received_at, worklist.id)
            AND ahead.reviewed_at IS NULL))
    ORDER BY worklist.reading_tier, worklist.received_at, worklist.id
"""

READING_LIST_APART = """
    SELECT 'apart' AS tier,
      worklist.id AS entry_id,
      worklist.study_key,
      worklist.patient_id,
      worklist.accession_number,
      worklist.study_instance_uid,
      worklist.sop_instance_uid,
      worklist.status,
      worklist.priority,
      worklist.probability,
      worklist.label,
      worklist.reason,
      worklist.flags,
      worklist.model_version,
      worklist.received_at,
      CASE WHEN (worklist.study_key IS NULL) THEN 1 ELSE (SELECT count(*) AS count_1
        FROM worklist AS member
        WHERE member.study_key = worklist.study_key
        AND coalesce(member.patient_id, '') = coalesce(worklist.patient_id, '')
        AND member.reviewed_at IS NULL) END AS images,
      EXISTS (SELECT other.id
        FROM worklist AS other
        WHERE other.study_key = worklist.study_key
        AND coalesce(other.patient_id, '') != coalesce(worklist.patient_id, '')) AS
            identity_conflict
    FROM worklist
    WHERE worklist.reading_tier IS NULL
    AND worklist.reviewed_at IS NULL
    AND NOT (EXISTS (SELECT readable.id
            FROM worklist AS readable
            WHERE readable.reading_tier IS NOT NULL
            AND readable.study_key = worklist.study_key
            AND coalesce(readable.patient_id, '') = coalesce(worklist.patient_id,
                '')))
    AND NOT (EXISTS (SELECT earlier.id
            FROM worklist AS earlier
            WHERE earlier.reading_tier IS NULL
            AND earlier.study_key = worklist.study_key
            AND coalesce(earlier.patient_id, '') = coalesce(worklist.patient_id, '')
            AND (earlier.received_at, earlier.id) < (worklist.received_at,
                worklist.id)
            AND earlier.reviewed_at IS NULL))
    ORDER BY worklist.received_at, worklist.id
"""

TO_READ_ORDERED = sa.text("reviewed_at IS NULL AND reading_tier IS NOT NULL")
TO_READ_APART = sa.text("reviewed_at IS NULL AND reading_tier IS NULL")
OLD_TO_READ = sa.text("reviewed_at IS NULL")


def upgrade() -> None:
    stored = op.get_bind().dialect.name == "postgresql"  # SQLite adds virtual columns only
    op.drop_index("ix_worklist_reading_order", table_name="worklist")
    op.add_column(
        "worklist",
        sa.Column(
            "reading_tier", sa.SmallInteger(), sa.Computed(READING_TIER, persisted=stored or None)
        ),
    )
    op.add_column(
        "worklist",
        sa.Column(
            "study_key",
            sa.String(length=STUDY_KEY_LENGTH),
            sa.Computed(STUDY_KEY, persisted=stored or None),
        ),
    )
    op.create_index(op.f("ix_worklist_study_key"), "worklist", ["study_key"])
    op.create_index(
        "ix_worklist_reading_order",
        "worklist",
        ["reading_tier", "received_at", "id"],
        postgresql_where=TO_READ_ORDERED,
        sqlite_where=TO_READ_ORDERED,
    )
    op.create_index(
        "ix_worklist_reading_apart",
        "worklist",
        ["received_at", "id"],
        postgresql_where=TO_READ_APART,
        sqlite_where=TO_READ_APART,
    )
    op.execute(f"CREATE VIEW reading_list AS{READING_LIST}")
    op.execute(f"CREATE VIEW reading_list_apart AS{READING_LIST_APART}")


def downgrade() -> None:
    op.execute("DROP VIEW reading_list_apart")
    op.execute("DROP VIEW reading_list")
    op.drop_index("ix_worklist_reading_apart", table_name="worklist")
    op.drop_index("ix_worklist_reading_order", table_name="worklist")
    op.drop_index(op.f("ix_worklist_study_key"), table_name="worklist")
    # plain ALTER TABLE on both: SQLite 3.35+ drops a generated column in place
    op.execute("ALTER TABLE worklist DROP COLUMN study_key")
    op.execute("ALTER TABLE worklist DROP COLUMN reading_tier")
    op.create_index(
        "ix_worklist_reading_order",
        "worklist",
        ["priority_rank", sa.literal_column("probability DESC"), "received_at"],
        postgresql_where=OLD_TO_READ,
        sqlite_where=OLD_TO_READ,
    )
