"""an exception or loss reported before the dispatch was recorded

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25 07:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.sqltypes

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "early_reports",
        sa.Column("shipment_id", sa.String(length=36), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("at", shared.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["shipment_id"],
            ["shipments.id"],
            name=op.f("fk_early_reports_shipment_id_shipments"),
        ),
        sa.PrimaryKeyConstraint("shipment_id", name=op.f("pk_early_reports")),
    )


def downgrade() -> None:
    op.drop_table("early_reports")
