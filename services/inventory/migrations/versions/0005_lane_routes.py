"""lanes by mode and carrier; the route a reservation's choice was predicted with

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 07:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("lane_transits") as batch:
        batch.add_column(sa.Column("mode", sa.String(16), nullable=True))
        batch.add_column(sa.Column("carrier", sa.String(100), nullable=True))
    with op.batch_alter_table("reservations") as batch:
        batch.add_column(sa.Column("route_mode", sa.String(16), nullable=True))
        batch.add_column(sa.Column("route_carrier", sa.String(100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reservations") as batch:
        batch.drop_column("route_carrier")
        batch.drop_column("route_mode")
    with op.batch_alter_table("lane_transits") as batch:
        batch.drop_column("carrier")
        batch.drop_column("mode")
