"""result_objects: two more kinds, the RIS messages (HL7 v2 ORU^R01 and FHIR DiagnosticReport)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-14

The RIS results ride the same durable queue as the SR and SC (states, attempts, claims, the
give-up schedule): only the CHECK constraint on ``result_objects.kind`` changes, from
('sr', 'sc') to ('sr', 'sc', 'hl7', 'fhir'). SQLite cannot alter a constraint: the table is
copied (batch mode), its rows and indexes with it. Downgrading first deletes the RIS rows
(their messages were delivered or are given up: the SR/SC rows are untouched).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_KINDS = ("sr", "sc")
NEW_KINDS = ("sr", "sc", "hl7", "fhir")
CONSTRAINT = "ck_result_objects_result_kind"  # the naming convention's name (db.models)


def _kinds(kinds: Sequence[str]) -> str:
    return "kind IN (" + ", ".join(f"'{kind}'" for kind in kinds) + ")"


def _set_kinds(kinds: Sequence[str]) -> None:
    with op.batch_alter_table("result_objects") as batch:
        batch.drop_constraint(op.f(CONSTRAINT), type_="check")
        batch.create_check_constraint(op.f(CONSTRAINT), sa.text(_kinds(kinds)))


def upgrade() -> None:
    _set_kinds(NEW_KINDS)


def downgrade() -> None:
    op.execute(f"DELETE FROM result_objects WHERE NOT ({_kinds(OLD_KINDS)})")
    _set_kinds(OLD_KINDS)
