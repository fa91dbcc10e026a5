"""when tracking heard of a shipment's dispatch

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 02:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.sqltypes

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("shipments") as batch:
        batch.add_column(
            sa.Column("dispatch_heard_at", shared.sqltypes.UTCDateTime(), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("shipments") as batch:
        batch.drop_column("dispatch_heard_at")
