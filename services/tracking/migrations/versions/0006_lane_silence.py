"""the longest silence of each delivered shipment, for what its lane allows

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 01:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Null for transits learned before: a lane's silence is judged on those that have it.
    with op.batch_alter_table("lane_transits") as batch:
        batch.add_column(sa.Column("longest_silence_hours", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("lane_transits") as batch:
        batch.drop_column("longest_silence_hours")
