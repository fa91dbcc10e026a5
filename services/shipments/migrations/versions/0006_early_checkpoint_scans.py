"""scans at a named place heard before the dispatch was recorded

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 10:05:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.sqltypes

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "early_checkpoint_scans",
        sa.Column("shipment_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("at", shared.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["shipment_id"],
            ["shipments.id"],
            name=op.f("fk_early_checkpoint_scans_shipment_id_shipments"),
        ),
        sa.PrimaryKeyConstraint("shipment_id", "name", name=op.f("pk_early_checkpoint_scans")),
    )


def downgrade() -> None:
    op.drop_table("early_checkpoint_scans")
