"""where else a part on a shipment in trouble could come from

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25 08:30:00.000000
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
        "sourcings",
        sa.Column("shipment_id", sa.String(length=36), nullable=False),
        sa.Column("part_number", sa.String(length=64), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("alternatives", sa.Text(), nullable=True),
        sa.Column("asked_at", shared.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("answered_at", shared.sqltypes.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("shipment_id", "part_number", name=op.f("pk_sourcings")),
    )


def downgrade() -> None:
    op.drop_table("sourcings")
